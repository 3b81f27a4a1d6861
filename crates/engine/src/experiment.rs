//! Experiment files: parsing `[experiment]`, `[stages.NAME]`, `[report]` and `[executor]`, `--set`
//! overrides, and validation of the engine's own keys (`kind`, `inputs`, `sweep`, `gather`,
//! `for_each`, `for_each_key`) with errors that name file, line and column.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::locate::{line_col, locate};
use crate::registry::Registry;

/// The engine's own keys in a stage table; everything else goes to the kind.
pub const ENGINE_KEYS: [&str; 6] = [
    "kind",
    "inputs",
    "sweep",
    "gather",
    "for_each",
    "for_each_key",
];

/// Where a fan-out child goes in the parameters when `for_each_key` is not given.
pub const DEFAULT_FOR_EACH_KEY: &str = "model";

/// A problem in an experiment file, located at `FILE:LINE:COL` (or at a `--set` argument).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{where_}: {message}")]
pub struct ExperimentError {
    /// `FILE:LINE:COL`, `FILE`, or `--set ARG`.
    pub where_: String,
    pub file: PathBuf,
    /// 1-based line and column, when the problem is in the file.
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

/// One `[stages.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDef {
    pub name: String,
    pub kind: String,
    pub inputs: Vec<String>,
    /// Sweep keys (possibly dotted paths into the parameters), sorted, each with its values.
    pub sweep: Vec<(String, Vec<toml::Value>)>,
    /// Inputs whose swept nodes this stage takes all at once.
    pub gather: Vec<String>,
    /// Dynamic fan-out: one node per child configuration that this stage's nodes list in
    /// their `children.json` (see [`crate::plan`]). The source is an ordering dependency,
    /// not an input: a child node's key is its own content.
    pub for_each: Option<String>,
    /// Dotted parameter path that receives each child (default [`DEFAULT_FOR_EACH_KEY`]).
    pub for_each_key: String,
    /// Kind-specific parameters (the table without the engine keys).
    pub params: toml::Table,
    /// The `[stages.NAME]` table this stage comes from: its own name, or for a link of a
    /// chain its kind expanded (`student-ta1`), the stage that was written (`student`).
    pub origin: String,
}

impl StageDef {
    /// The stages this one waits for: its inputs, then its `for_each` source.
    pub fn deps(&self) -> impl Iterator<Item = &String> {
        self.inputs.iter().chain(self.for_each.iter())
    }
}

/// A parsed and validated experiment file.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub file: PathBuf,
    /// Folder of the file: working directory of its stages.
    pub dir: PathBuf,
    pub name: String,
    pub seed: u64,
    pub description: String,
    /// Stages in topological order (ties in file order).
    pub stages: IndexMap<String, StageDef>,
    /// The opaque `[report]` table; it joins no key.
    pub report: Option<toml::Table>,
    /// Where the nodes run (`[executor]`, validated; joins no key).
    pub executor: crate::slurm::ExecutorConfig,
    text: String,
    overrides: Vec<(Vec<String>, String)>,
}

impl Experiment {
    /// Read, apply `--set PATH=VALUE` overrides, and validate against `registry`.
    pub fn load(
        file: &Path,
        sets: &[String],
        registry: &Registry,
    ) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(file).map_err(|e| ExperimentError {
            where_: file.display().to_string(),
            file: file.to_path_buf(),
            line: None,
            col: None,
            message: format!("cannot read the experiment file: {e}"),
        })?;
        Self::parse(file, text, sets, registry)
    }

    /// Like [`Experiment::load`] with the text given.
    pub fn parse(
        file: &Path,
        text: String,
        sets: &[String],
        registry: &Registry,
    ) -> Result<Self, ExperimentError> {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let mut exp = Experiment {
            file: file.to_path_buf(),
            dir,
            name: String::new(),
            seed: 0,
            description: String::new(),
            stages: IndexMap::new(),
            report: None,
            executor: Default::default(),
            text,
            overrides: Vec::new(),
        };
        let mut root: toml::Table = match exp.text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let (line, col) = e
                    .span()
                    .map(|s| line_col(&exp.text, s.start))
                    .unwrap_or((1, 1));
                return Err(exp.error_lc(
                    line,
                    col,
                    format!("invalid TOML: {}", e.message().trim()),
                ));
            }
        };
        for s in sets {
            exp.apply_set(&mut root, s)?;
        }
        exp.validate(root, registry)?;
        Ok(exp)
    }

    /// The file's text (for tools that need the original).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn error_lc(&self, line: usize, col: usize, message: String) -> ExperimentError {
        ExperimentError {
            where_: format!("{}:{line}:{col}", self.file.display()),
            file: self.file.clone(),
            line: Some(line),
            col: Some(col),
            message,
        }
    }

    /// An error located at key path `path` (e.g. `["stages", "a", "inputs", "0"]`).
    /// The `--set PATH=VALUE` arguments applied, in order (a job loads the same plan).
    pub fn overrides(&self) -> Vec<String> {
        self.overrides.iter().map(|(_, a)| a.clone()).collect()
    }

    pub fn error_at(&self, path: &[String], message: impl Into<String>) -> ExperimentError {
        let message = message.into();
        if let Some((_, arg)) = self
            .overrides
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.len())
        {
            return ExperimentError {
                where_: format!("{}: --set {arg}", self.file.display()),
                file: self.file.clone(),
                line: None,
                col: None,
                message,
            };
        }
        let (line, col) = locate(&self.text, path)
            .map(|r| line_col(&self.text, r.start))
            .unwrap_or((1, 1));
        self.error_lc(line, col, message)
    }

    fn apply_set(&mut self, root: &mut toml::Table, arg: &str) -> Result<(), ExperimentError> {
        let bad = |m: String| ExperimentError {
            where_: format!("{}: --set {arg}", self.file.display()),
            file: self.file.clone(),
            line: None,
            col: None,
            message: m,
        };
        let Some((path, value)) = arg.split_once('=') else {
            return Err(bad("expected PATH=VALUE, e.g. stages.train.epochs=2".into()));
        };
        let path: Vec<String> = match toml_edit::Key::parse(path.trim()) {
            Ok(keys) => keys.iter().map(|k| k.get().to_string()).collect(),
            Err(_) => {
                return Err(bad(
                    "invalid key path; expected e.g. stages.train.epochs".into()
                ));
            }
        };
        if path.is_empty() || path.iter().any(|s| s.is_empty()) {
            return Err(bad(
                "empty key in the path; expected e.g. stages.train.epochs".into(),
            ));
        }
        let value = match format!("v = {value}").parse::<toml::Table>() {
            Ok(mut t) => t
                .remove("v")
                .unwrap_or(toml::Value::String(value.to_string())),
            Err(_) => toml::Value::String(value.to_string()),
        };
        let mut table = &mut *root;
        for (i, seg) in path[..path.len() - 1].iter().enumerate() {
            let entry = table
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(bad(format!(
                        "`{}` is not a table, cannot set a key inside it",
                        path[..=i].join(".")
                    )));
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
        self.overrides.push((path, arg.to_string()));
        Ok(())
    }

    fn validate(
        &mut self,
        mut root: toml::Table,
        registry: &Registry,
    ) -> Result<(), ExperimentError> {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for key in root.keys() {
            if !["experiment", "stages", "report", "executor"].contains(&key.as_str()) {
                return Err(self.error_at(
                    &p(&[key]),
                    format!("unknown top-level key `{key}`; expected `[experiment]`, `[stages.NAME]`, `[report]` or `[executor]`"),
                ));
            }
        }
        // [experiment]
        let Some(exp_v) = root.remove("experiment") else {
            return Err(self.error_at(
                &[],
                "missing `[experiment]` table; expected one with `name` and `seed`",
            ));
        };
        let toml::Value::Table(exp_t) = exp_v else {
            return Err(self.error_at(
                &p(&["experiment"]),
                "`experiment` must be a table with `name` and `seed`",
            ));
        };
        for (k, v) in &exp_t {
            let at = p(&["experiment", k]);
            match (k.as_str(), v) {
                ("name", toml::Value::String(s)) => self.name = s.clone(),
                ("name", v) => {
                    return Err(self.error_at(
                        &at,
                        format!("`name` must be a string, found {}", type_name(v)),
                    ));
                }
                ("seed", toml::Value::Integer(i)) if *i >= 0 => self.seed = *i as u64,
                ("seed", v) => {
                    return Err(self.error_at(
                        &at,
                        format!("`seed` must be a non-negative integer, found {}", show(v)),
                    ));
                }
                ("description", toml::Value::String(s)) => self.description = s.clone(),
                ("description", v) => {
                    return Err(self.error_at(
                        &at,
                        format!("`description` must be a string, found {}", type_name(v)),
                    ));
                }
                _ => {
                    return Err(self.error_at(
                        &at,
                        format!("unknown key `{k}` in [experiment]; expected `name`, `seed` or `description`"),
                    ));
                }
            }
        }
        if !exp_t.contains_key("name") {
            return Err(self.error_at(
                &p(&["experiment"]),
                "missing `name` in [experiment]; expected a string",
            ));
        }
        if !exp_t.contains_key("seed") {
            return Err(self.error_at(
                &p(&["experiment"]),
                "missing `seed` in [experiment]; expected a non-negative integer",
            ));
        }
        // [report] is opaque
        match root.remove("report") {
            None => {}
            Some(toml::Value::Table(t)) => self.report = Some(t),
            Some(v) => {
                return Err(self.error_at(
                    &p(&["report"]),
                    format!("`report` must be a table, found {}", type_name(&v)),
                ));
            }
        }
        let executor = match root.remove("executor") {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(v) => {
                return Err(self.error_at(
                    &p(&["executor"]),
                    format!("`executor` must be a table, found {}", type_name(&v)),
                ));
            }
        };
        // [stages.*]
        let stages_t = match root.remove("stages") {
            Some(toml::Value::Table(t)) if !t.is_empty() => t,
            Some(toml::Value::Table(_)) | None => {
                return Err(self.error_at(
                    &[],
                    "no stages; expected at least one `[stages.NAME]` table with a `kind`",
                ));
            }
            Some(v) => {
                return Err(self.error_at(
                    &p(&["stages"]),
                    format!(
                        "`stages` must be a table of `[stages.NAME]` tables, found {}",
                        type_name(&v)
                    ),
                ));
            }
        };
        let names: Vec<String> = stages_t.keys().cloned().collect();
        let mut defs: IndexMap<String, StageDef> = IndexMap::new();
        for (name, v) in stages_t {
            let at = p(&["stages", &name]);
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.error_at(
                    &at,
                    format!("invalid stage name `{name}`; expected letters, digits, `_` or `-`"),
                ));
            }
            let toml::Value::Table(mut t) = v else {
                return Err(self.error_at(
                    &at,
                    format!(
                        "stage `{name}` must be a table like `[stages.{name}]`, found {}",
                        type_name(&v)
                    ),
                ));
            };
            let kind = match t.remove("kind") {
                Some(toml::Value::String(k)) => k,
                Some(v) => {
                    return Err(self.error_at(
                        &p(&["stages", &name, "kind"]),
                        format!("`kind` must be a string, found {}", type_name(&v)),
                    ));
                }
                None => {
                    return Err(self.error_at(
                        &at,
                        format!(
                            "stage `{name}` has no `kind`; expected one of: {}",
                            registry.names().join(", ")
                        ),
                    ));
                }
            };
            if registry.get(&kind).is_none() {
                return Err(self.error_at(
                    &p(&["stages", &name, "kind"]),
                    format!(
                        "unknown stage kind `{kind}`; expected one of: {}",
                        registry.names().join(", ")
                    ),
                ));
            }
            let inputs = self.string_list(&mut t, &name, "inputs", "a list of stage names")?;
            for (i, input) in inputs.iter().enumerate() {
                let ip = p(&["stages", &name, "inputs", &i.to_string()]);
                if *input == name {
                    return Err(
                        self.error_at(&ip, format!("stage `{name}` lists itself as an input"))
                    );
                }
                if !names.contains(input) {
                    return Err(self.error_at(
                        &ip,
                        format!(
                            "unknown input stage `{input}`; expected one of: {}",
                            names.join(", ")
                        ),
                    ));
                }
                if inputs[..i].contains(input) {
                    return Err(self.error_at(&ip, format!("input `{input}` is listed twice")));
                }
            }
            let gather =
                self.string_list(&mut t, &name, "gather", "a list of input stage names")?;
            for (i, g) in gather.iter().enumerate() {
                if !inputs.contains(g) {
                    return Err(self.error_at(
                        &p(&["stages", &name, "gather", &i.to_string()]),
                        format!(
                            "`gather` names `{g}`, which is not in `inputs`; expected one of: {}",
                            inputs.join(", ")
                        ),
                    ));
                }
            }
            let for_each = match t.remove("for_each") {
                None => None,
                Some(toml::Value::String(s)) => Some(s),
                Some(v) => {
                    return Err(self.error_at(
                        &p(&["stages", &name, "for_each"]),
                        format!(
                            "`for_each` must be the name of a stage whose nodes list children, found {}",
                            type_name(&v)
                        ),
                    ));
                }
            };
            let key_given = t.contains_key("for_each_key");
            let for_each_key = match t.remove("for_each_key") {
                None => DEFAULT_FOR_EACH_KEY.to_string(),
                Some(_) if for_each.is_none() => {
                    return Err(self.error_at(
                        &p(&["stages", &name, "for_each_key"]),
                        "`for_each_key` without `for_each`; expected both, e.g. for_each = \"select\"",
                    ));
                }
                Some(toml::Value::String(s)) => s,
                Some(v) => {
                    return Err(self.error_at(
                        &p(&["stages", &name, "for_each_key"]),
                        format!(
                            "`for_each_key` must be a parameter path like \"model\", found {}",
                            type_name(&v)
                        ),
                    ));
                }
            };
            if let Some(src) = &for_each {
                let at = p(&["stages", &name, "for_each"]);
                if *src == name {
                    return Err(self.error_at(
                        &at,
                        format!("stage `{name}` fans out over itself; expected another stage"),
                    ));
                }
                if !names.contains(src) {
                    return Err(self.error_at(
                        &at,
                        format!(
                            "unknown stage `{src}` in `for_each`; expected one of: {}",
                            names.join(", ")
                        ),
                    ));
                }
                if let Some(i) = inputs.iter().position(|x| x == src) {
                    return Err(self.error_at(
                        &p(&["stages", &name, "inputs", &i.to_string()]),
                        format!(
                            "`{src}` is both an input and the `for_each` source of stage `{name}`; \
                             remove it from `inputs` (each child node is keyed by its own content, \
                             not by the node that listed it)"
                        ),
                    ));
                }
                let kp: Vec<&str> = for_each_key.split('.').collect();
                let kat = if key_given {
                    p(&["stages", &name, "for_each_key"])
                } else {
                    at.clone()
                };
                if kp.iter().any(|s| s.is_empty()) || ENGINE_KEYS.contains(&kp[0]) {
                    return Err(self.error_at(
                        &kat,
                        format!(
                            "`for_each_key` `{for_each_key}` is not a parameter path; expected e.g. \"model\""
                        ),
                    ));
                }
                if get_path(&t, &kp).is_some() {
                    let mut kat = p(&["stages", &name]);
                    kat.extend(kp.iter().map(|s| s.to_string()));
                    return Err(self.error_at(
                        &kat,
                        format!(
                            "`{for_each_key}` is set in stage `{name}`, but `for_each` fills it with each child of `{src}`; remove it"
                        ),
                    ));
                }
            }
            let mut sweep = Vec::new();
            match t.remove("sweep") {
                None => {}
                Some(toml::Value::Table(st)) => {
                    for (k, v) in st {
                        let kp = p(&["stages", &name, "sweep", &k]);
                        let toml::Value::Array(vals) = v else {
                            return Err(self.error_at(
                                &kp,
                                format!(
                                    "sweep `{k}` must be a list of values, found {}",
                                    type_name(&v)
                                ),
                            ));
                        };
                        if vals.is_empty() {
                            return Err(self.error_at(
                                &kp,
                                format!("sweep `{k}` is empty; expected at least one value"),
                            ));
                        }
                        let path: Vec<&str> = k.split('.').collect();
                        if path.iter().any(|s| s.is_empty()) || ENGINE_KEYS.contains(&path[0]) {
                            return Err(self.error_at(
                                &kp,
                                format!("cannot sweep `{k}`; expected a parameter of the stage"),
                            ));
                        }
                        if get_path(&t, &path).is_some() {
                            return Err(self.error_at(
                                &kp,
                                format!(
                                    "`{k}` is both set in the stage and swept; keep only the sweep"
                                ),
                            ));
                        }
                        let mut seen: Vec<&toml::Value> = Vec::new();
                        for (i, x) in vals.iter().enumerate() {
                            if seen.contains(&x) {
                                return Err(self.error_at(
                                    &p(&["stages", &name, "sweep", &k, &i.to_string()]),
                                    format!("sweep `{k}` lists {} twice", show(x)),
                                ));
                            }
                            seen.push(x);
                        }
                        sweep.push((k, vals));
                    }
                    sweep.sort_by(|a, b| a.0.cmp(&b.0));
                    if let Some(src) = &for_each {
                        let overlaps = |a: &str, b: &str| {
                            a == b
                                || a.starts_with(&format!("{b}."))
                                || b.starts_with(&format!("{a}."))
                        };
                        if let Some((k, _)) = sweep.iter().find(|(k, _)| overlaps(k, &for_each_key))
                        {
                            return Err(self.error_at(
                                &p(&["stages", &name, "sweep", k]),
                                format!(
                                    "cannot sweep `{k}`: `for_each` fills `{for_each_key}` with each child of `{src}`"
                                ),
                            ));
                        }
                    }
                }
                Some(v) => {
                    return Err(self.error_at(
                        &p(&["stages", &name, "sweep"]),
                        format!(
                            "`sweep` must be a table of key = [values], found {}",
                            type_name(&v)
                        ),
                    ));
                }
            }
            defs.insert(
                name.clone(),
                StageDef {
                    origin: name.clone(),
                    name,
                    kind,
                    inputs,
                    sweep,
                    gather,
                    for_each,
                    for_each_key,
                    params: t,
                },
            );
        }
        let defs = self.expand(defs, registry)?;
        self.stages = self.topo_order(defs)?;
        if let Some(t) = executor {
            let origins: HashSet<&str> = self.stages.values().map(|d| d.origin.as_str()).collect();
            self.executor = crate::slurm::ExecutorConfig::from_table(&t, &|s| origins.contains(s))
                .map_err(|e| {
                    let mut at = vec!["executor".to_string()];
                    at.extend(e.path.iter().cloned());
                    self.error_at(&at, format!("[executor]: {}", e.message))
                })?;
        }
        Ok(())
    }

    fn string_list(
        &self,
        t: &mut toml::Table,
        stage: &str,
        key: &str,
        expected: &str,
    ) -> Result<Vec<String>, ExperimentError> {
        let at = vec!["stages".to_string(), stage.to_string(), key.to_string()];
        match t.remove(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    toml::Value::String(s) => Ok(s),
                    v => {
                        let mut ip = at.clone();
                        ip.push(i.to_string());
                        Err(self.error_at(
                            &ip,
                            format!("`{key}` must be {expected}, found {}", show(&v)),
                        ))
                    }
                })
                .collect(),
            Some(v) => Err(self.error_at(
                &at,
                format!("`{key}` must be {expected}, found {}", type_name(&v)),
            )),
        }
    }

    /// Let each kind rewrite its stages into chains ([`crate::StageKind::expand`]).
    fn expand(
        &self,
        defs: IndexMap<String, StageDef>,
        registry: &Registry,
    ) -> Result<IndexMap<String, StageDef>, ExperimentError> {
        let lookup = |n: &str| defs.get(n).map(|d| (d.kind.clone(), d.params.clone()));
        let mut out: IndexMap<String, StageDef> = IndexMap::new();
        for def in defs.values() {
            let at = |path: &[String]| {
                let mut p = vec!["stages".to_string(), def.name.clone()];
                p.extend(path.iter().cloned());
                p
            };
            let Some(kind) = registry.get(&def.kind) else {
                out.insert(def.name.clone(), def.clone());
                continue;
            };
            let ctx = crate::ExpandContext {
                inputs: &def.inputs,
                stage: &lookup,
            };
            let exp = kind
                .expand(&def.params, &ctx)
                .map_err(|e| self.error_at(&at(&e.path), e.message.clone()))?;
            let Some(exp) = exp else {
                out.insert(def.name.clone(), def.clone());
                continue;
            };
            if exp.links.is_empty() {
                out.insert(
                    def.name.clone(),
                    StageDef {
                        params: exp.params,
                        ..def.clone()
                    },
                );
                continue;
            }
            if def.for_each.is_some() {
                return Err(self.error_at(
                    &at(&["for_each".to_string()]),
                    format!(
                        "stage `{}` expands into a chain, which cannot fan out with `for_each`; fan out a stage of another kind",
                        def.name
                    ),
                ));
            }
            if def.inputs.is_empty() || def.gather.contains(&def.inputs[0]) {
                return Err(self.error_at(
                    &at(&[]),
                    format!(
                        "stage `{}` expands into a chain through its first input, so it needs a first input that is not gathered",
                        def.name
                    ),
                ));
            }
            let mut prev: Option<String> = None;
            for (suffix, params) in exp.links {
                let name = format!("{}-{suffix}", def.name);
                if defs.contains_key(&name) || out.contains_key(&name) {
                    return Err(self.error_at(
                        &at(&[]),
                        format!(
                            "stage `{}` expands into a stage `{name}`, but that name is taken; rename one of them",
                            def.name
                        ),
                    ));
                }
                let mut inputs = def.inputs.clone();
                if let Some(p) = prev.replace(name.clone()) {
                    inputs[0] = p;
                }
                out.insert(
                    name.clone(),
                    StageDef {
                        name,
                        kind: def.kind.clone(),
                        inputs,
                        sweep: Vec::new(),
                        gather: Vec::new(),
                        for_each: None,
                        for_each_key: DEFAULT_FOR_EACH_KEY.to_string(),
                        params,
                        origin: def.name.clone(),
                    },
                );
            }
            let mut inputs = def.inputs.clone();
            inputs[0] = prev.expect("at least one link");
            out.insert(
                def.name.clone(),
                StageDef {
                    inputs,
                    params: exp.params,
                    ..def.clone()
                },
            );
        }
        Ok(out)
    }

    /// Order stages so that inputs come first (ties in file order); report a cycle by name.
    fn topo_order(
        &self,
        defs: IndexMap<String, StageDef>,
    ) -> Result<IndexMap<String, StageDef>, ExperimentError> {
        let mut done: HashSet<String> = HashSet::new();
        let mut order: IndexMap<String, StageDef> = IndexMap::new();
        while order.len() < defs.len() {
            let next = defs
                .values()
                .find(|d| !done.contains(&d.name) && d.deps().all(|i| done.contains(i)));
            match next {
                Some(d) => {
                    done.insert(d.name.clone());
                    order.insert(d.name.clone(), d.clone());
                }
                None => {
                    // every remaining stage waits on another remaining one: walk to find a cycle
                    let start = defs
                        .values()
                        .find(|d| !done.contains(&d.name))
                        .map(|d| d.name.clone())
                        .unwrap_or_default();
                    let mut path = vec![start.clone()];
                    let mut cur = start;
                    loop {
                        let d = &defs[&cur];
                        let Some(n) = d.deps().find(|i| !done.contains(*i)) else {
                            break;
                        };
                        if let Some(pos) = path.iter().position(|x| x == n) {
                            // `path` follows inputs backwards; show the data flow,
                            // starting at the stage the walk started from
                            let mut cyc: Vec<String> = path[pos..].to_vec();
                            cyc.reverse();
                            cyc.rotate_right(1);
                            let first = cyc[0].clone();
                            cyc.push(first.clone());
                            let feeder = &cyc[cyc.len() - 2];
                            let at = match defs[&first].inputs.iter().position(|i| i == feeder) {
                                Some(idx) => vec![
                                    "stages".into(),
                                    first.clone(),
                                    "inputs".into(),
                                    idx.to_string(),
                                ],
                                None => vec!["stages".into(), first.clone(), "for_each".into()],
                            };
                            return Err(self.error_at(
                                &at,
                                format!(
                                    "cycle between stages: {}; expected inputs to form a DAG",
                                    cyc.join(" -> ")
                                ),
                            ));
                        }
                        path.push(n.clone());
                        cur = n.clone();
                    }
                    return Err(self.error_at(&[], "stages form a cycle"));
                }
            }
        }
        Ok(order)
    }
}

/// Look up a dotted path inside a table.
pub fn get_path<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        toml::Value::Table(inner) => get_path(inner, rest),
        _ => None,
    }
}

/// Set a dotted path inside a table, creating tables on the way.
pub fn set_path(t: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty path")?;
    if rest.is_empty() {
        t.insert(first.to_string(), value);
        return Ok(());
    }
    let e = t
        .entry(first.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match e {
        toml::Value::Table(inner) => set_path(inner, rest, value),
        _ => Err(format!("`{first}` is not a table")),
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) | toml::Value::Array(_) => type_name(v).to_string(),
        _ => format!("{} `{}`", type_name(v), crate::canon::display_value(v)),
    }
}

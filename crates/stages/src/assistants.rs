//! Teacher-assistant chains for the `distill` kind: `assistants = [ {model}, … ]` or
//! `assistants = "auto"` (with `auto_assistants = N`, default 1) rewrites one distill stage
//! into teacher → TA₁ → … → TAₙ → student, one distill stage per link (named
//! `<stage>-ta1`, `<stage>-ta2`, …) that shares the stage's recipe (temperature, alpha,
//! epochs, lr, …). `auto` spaces the assistants geometrically in parameters between the
//! teacher (the first input's `model` or `student`) and the student, choosing the student's
//! architecture with the width (channels or width multiplier) closest in log-parameters.
//! Parameters are counted at a nominal input (49×10 items, 12 classes): only their ratios
//! matter for the spacing, and the real counts are measured by each link's run.

use crate::model_spec::ModelSpec;
use whittle_engine::{ExpandContext, Expansion, ParamError};

const KEYS: [&str; 2] = ["assistants", "auto_assistants"];

/// The chain of a distill stage, or `None` without `assistants`.
pub fn expand(params: &toml::Table, ctx: &ExpandContext) -> Result<Option<Expansion>, ParamError> {
    let Some(value) = params.get("assistants") else {
        if params.contains_key("auto_assistants") {
            return Err(ParamError::new(
                ["auto_assistants"],
                "`auto_assistants` needs `assistants = \"auto\"`",
            ));
        }
        return Ok(None);
    };
    let mut own = params.clone();
    for k in KEYS {
        own.remove(k);
    }
    let student = spec_at(&own, "student", &["student"])?;
    let specs: Vec<ModelSpec> = match value {
        toml::Value::String(s) if s == "auto" => {
            let n = match params.get("auto_assistants") {
                None => 1,
                Some(toml::Value::Integer(n)) if (1..=8).contains(n) => *n as usize,
                Some(v) => {
                    return Err(ParamError::new(
                        ["auto_assistants"],
                        format!("must be an integer from 1 to 8, found {v}"),
                    ));
                }
            };
            let teacher = teacher_spec(ctx)?;
            auto_specs(&teacher, &student, n)?
        }
        toml::Value::Array(items) => {
            if params.contains_key("auto_assistants") {
                return Err(ParamError::new(
                    ["auto_assistants"],
                    "`auto_assistants` only applies to `assistants = \"auto\"`",
                ));
            }
            if items.is_empty() {
                return Err(ParamError::new(
                    ["assistants"],
                    "empty list; give one model per teacher assistant, or remove the key",
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| spec_of(v, &["assistants".into(), i.to_string()]))
                .collect::<Result<_, _>>()?
        }
        v => {
            return Err(ParamError::new(
                ["assistants"],
                format!(
                    "expected a list of models (e.g. [{{ arch = \"tcn\", channels = 24 }}]) or \"auto\", found {v}"
                ),
            ));
        }
    };
    let mut links = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut t = own.clone();
        let v = toml::Value::try_from(spec)
            .map_err(|e| ParamError::new(["assistants"], e.to_string()))?;
        t.insert("student".into(), v);
        links.push((format!("ta{}", i + 1), t));
    }
    Ok(Some(Expansion { links, params: own }))
}

fn spec_of(v: &toml::Value, at: &[String]) -> Result<ModelSpec, ParamError> {
    let spec: ModelSpec = v
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| ParamError::new(at.to_vec(), e.message().to_string()))?;
    spec.validate()
        .map_err(|e| ParamError::new(at.to_vec(), format!("{e:#}")))?;
    Ok(spec)
}

fn spec_at(t: &toml::Table, key: &str, at: &[&str]) -> Result<ModelSpec, ParamError> {
    let at: Vec<String> = at.iter().map(|s| s.to_string()).collect();
    let v = t
        .get(key)
        .ok_or_else(|| ParamError::new(Vec::<String>::new(), format!("missing `{key}`")))?;
    spec_of(v, &at)
}

/// The teacher's model: the first input's `model` (a trained network) or `student` (a
/// distilled one).
fn teacher_spec(ctx: &ExpandContext) -> Result<ModelSpec, ParamError> {
    let err = |m: String| ParamError::new(["assistants"], m);
    let name = ctx
        .inputs
        .first()
        .ok_or_else(|| err("`auto` needs the teacher as the first input".into()))?;
    let (kind, params) =
        (ctx.stage)(name).ok_or_else(|| err(format!("unknown teacher stage `{name}`")))?;
    let v = params.get("model").or_else(|| params.get("student")).ok_or_else(|| {
        err(format!(
            "`auto` sizes the assistants from the teacher's model, but the teacher `{name}` (kind `{kind}`) has no `model`; list the assistants explicitly"
        ))
    })?;
    spec_of(v, &["assistants".into()])
}

/// Parameters at the nominal input (49×10 items, 12 classes).
fn nominal_params(spec: &ModelSpec) -> Result<f64, ParamError> {
    let cfg = spec
        .config(&[49, 10], 12)
        .map_err(|e| ParamError::new(["assistants"], format!("{e:#}")))?;
    let g = cfg
        .build()
        .map_err(|e| ParamError::new(["assistants"], format!("{e:#}")))?;
    Ok(g.params() as f64)
}

/// The student's architecture at width `w` (channels, or a width multiplier in 1/16 steps).
fn with_width(student: &ModelSpec, w: usize) -> Option<ModelSpec> {
    let mut s = student.clone();
    match &mut s {
        ModelSpec::Tcn { channels, .. } | ModelSpec::DsCnn { channels, .. } => *channels = w,
        ModelSpec::ResNet8 { width }
        | ModelSpec::MobilenetV1 {
            alpha: width,
            layout: None,
            ..
        } => *width = w as f64 / 16.0,
        _ => return None,
    }
    Some(s)
}

/// `n` assistants spaced geometrically in parameters between teacher and student.
pub fn auto_specs(
    teacher: &ModelSpec,
    student: &ModelSpec,
    n: usize,
) -> Result<Vec<ModelSpec>, ParamError> {
    let (pt, ps) = (nominal_params(teacher)?, nominal_params(student)?);
    if with_width(student, 1).is_none() {
        return Err(ParamError::new(
            ["assistants"],
            format!(
                "`auto` needs a student with a width (tcn, ds_cnn, resnet8, mobilenet_v1), not `{}`",
                student.arch()
            ),
        ));
    }
    if pt <= ps {
        return Err(ParamError::new(
            ["assistants"],
            format!("`auto` needs a teacher larger than the student ({pt} ≤ {ps} parameters)"),
        ));
    }
    // candidate widths and their sizes, smallest first
    let mut sizes = Vec::new();
    for w in 1..=512 {
        let s = with_width(student, w).expect("checked above");
        let p = nominal_params(&s)?;
        sizes.push((s, p));
        if p >= pt {
            break;
        }
    }
    let mut out: Vec<ModelSpec> = Vec::new();
    for i in 1..=n {
        let f = i as f64 / (n + 1) as f64;
        let target = (pt.ln() * (1.0 - f) + ps.ln() * f).exp();
        let best = sizes
            .iter()
            .min_by(|a, b| {
                let da = (a.1.ln() - target.ln()).abs();
                let db = (b.1.ln() - target.ln()).abs();
                da.total_cmp(&db)
            })
            .expect("at least one width");
        out.push(best.0.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcn(c: usize) -> ModelSpec {
        ModelSpec::Tcn {
            channels: c,
            kernel: 3,
            dilations: vec![1, 1, 2, 2, 4, 4, 8],
            batch_norm: true,
            residual_every: 2,
            padding: Default::default(),
        }
    }

    #[test]
    fn auto_spaces_assistants_geometrically_in_parameters() {
        let (pt, ps) = (
            nominal_params(&tcn(64)).unwrap(),
            nominal_params(&tcn(8)).unwrap(),
        );
        let one = auto_specs(&tcn(64), &tcn(8), 1).unwrap();
        assert_eq!(one.len(), 1);
        // the geometric mean of the two sizes, to the nearest channel count
        let target = (pt * ps).sqrt();
        let p = nominal_params(&one[0]).unwrap();
        for c in 1..64 {
            let q = nominal_params(&tcn(c)).unwrap();
            assert!((p.ln() - target.ln()).abs() <= (q.ln() - target.ln()).abs() + 1e-12);
        }
        let two = auto_specs(&tcn(64), &tcn(8), 2).unwrap();
        let (a, b) = (
            nominal_params(&two[0]).unwrap(),
            nominal_params(&two[1]).unwrap(),
        );
        assert!(pt > a && a > b && b > ps, "{pt} > {a} > {b} > {ps}");
    }

    #[test]
    fn auto_rejects_a_teacher_smaller_than_the_student() {
        let e = auto_specs(&tcn(8), &tcn(64), 1).unwrap_err();
        assert!(
            e.message.contains("larger than the student"),
            "{}",
            e.message
        );
    }
}

//! Networks written node by node in the experiment file (`model = { arch = "graph", nodes =
//! [...] }`): malformed node lists fail at plan time with the message at the offending node's
//! key (`FILE:LINE:COL`), shape errors name node and key once the data's shape is known, and a
//! valid list resolves to a stable key.

use whittle_engine::{Experiment, ExperimentError, Plan};
use whittle_stages::model_spec::{ModelSpec, param_error};

const HEAD: &str = r#"[experiment]
name = "g"
seed = 1

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 2, val_per_class = 1, test_per_class = 1 }

[stages.net]
kind = "train"
inputs = ["data"]
epochs = 1

[stages.net.model]
arch = "graph"
"#;

/// The experiment with `nodes` written one per line; node k is on line `first_node_line() + k`.
fn text(nodes: &[&str]) -> String {
    format!("{HEAD}nodes = [\n{}\n]\n", nodes.join(",\n"))
}

fn first_node_line() -> usize {
    HEAD.lines().count() + 2
}

fn plan(text: String) -> Result<Plan, ExperimentError> {
    let reg = whittle_stages::registry();
    let exp = Experiment::parse(std::path::Path::new("g.toml"), text, &[], &reg)?;
    Plan::build(exp, &reg)
}

const FC: &str = r#"{ name = "pool", op = "global_avg_pool" }, { name = "fc", op = "linear" }"#;

/// (nodes, index of the offending line, text its column points at, message fragment)
fn cases() -> Vec<(Vec<&'static str>, usize, &'static str, &'static str)> {
    let c1 = r#"{ name = "c1", op = "conv", c_out = 4, kernel = [3, 3] }"#;
    vec![
        // 1. unknown op
        (
            vec![
                r#"{ name = "c1", op = "convv", c_out = 4, kernel = [3, 3] }"#,
                FC,
            ],
            0,
            "op = ",
            "node `c1`: unknown op `convv`; expected one of: conv, batch_norm, relu,",
        ),
        // 2. a key the op does not have
        (
            vec![c1, r#"{ name = "r", op = "relu", kernel = [3, 3] }"#, FC],
            1,
            "kernel",
            "node `r`: unknown key `kernel` for a relu node; expected one of: inputs",
        ),
        // 3. an input that does not exist
        (
            vec![c1, r#"{ name = "r", op = "relu", inputs = ["c2"] }"#, FC],
            1,
            "inputs",
            "node `r`: unknown input `c2`; expected `input` or an earlier node: c1",
        ),
        // 4. a forward reference (no cycle)
        (
            vec![
                r#"{ name = "r", op = "relu", inputs = ["c1"] }"#,
                r#"{ name = "c1", op = "conv", c_out = 4, kernel = [3, 3], inputs = ["input"] }"#,
                FC,
            ],
            0,
            "inputs",
            "node `r`: input `c1` is listed later (node #1); a node may only read `input` or nodes listed before it",
        ),
        // 5. a node reading itself
        (
            vec![c1, r#"{ name = "r", op = "relu", inputs = ["r"] }"#, FC],
            1,
            "inputs",
            "node `r`: cycle: the node reads itself",
        ),
        // 6. a cycle through later nodes
        (
            vec![
                r#"{ name = "a", op = "relu", inputs = ["c"] }"#,
                r#"{ name = "b", op = "relu", inputs = ["a"] }"#,
                r#"{ name = "c", op = "relu", inputs = ["b"] }"#,
                FC,
            ],
            0,
            "inputs",
            "node `a`: cycle: a -> c -> b -> a",
        ),
        // 7. duplicate name
        (
            vec![c1, r#"{ name = "c1", op = "relu" }"#, FC],
            1,
            "name",
            "duplicate node name `c1` (also node #0",
        ),
        // 8. wrong input count
        (
            vec![c1, r#"{ name = "s", op = "add", inputs = ["c1"] }"#, FC],
            1,
            "inputs",
            "node `s`: `add` takes two inputs, got 1",
        ),
        // 9. a value of the wrong type
        (
            vec![
                r#"{ name = "c1", op = "conv", c_out = 4, kernel = "3x3" }"#,
                FC,
            ],
            0,
            "kernel",
            "node `c1`: `kernel` must be invalid type: string \"3x3\", expected a sequence",
        ),
        // 10. a hidden conv without c_out
        (
            vec![r#"{ name = "c1", op = "conv", kernel = [3, 3] }"#, FC],
            0,
            "{ name",
            "node `c1`: a conv node needs `c_out` (only a final linear may leave it out",
        ),
        // 11. an out-of-range value
        (
            vec![c1, r#"{ name = "d", op = "dropout", p = 1.5 }"#, FC],
            1,
            "p = 1.5",
            "node `d`: `p` must be in [0, 1), got 1.5",
        ),
        // 12. stride with the wrong rank
        (
            vec![
                r#"{ name = "c1", op = "conv", c_out = 4, kernel = [3, 3], stride = [2] }"#,
                FC,
            ],
            0,
            "stride",
            "node `c1`: `stride` must have one entry ≥ 1 per kernel dimension (2), got [2]",
        ),
        // 13. a bad word for padding
        (
            vec![
                r#"{ name = "c1", op = "conv", c_out = 4, kernel = [3, 3], padding = "full" }"#,
                FC,
            ],
            0,
            "padding",
            "node `c1`: `padding` must be \"same\", \"valid\" or numbers, got \"full\"",
        ),
        // 14. an error inside a repeat block points into the block
        (
            vec![
                c1,
                r#"{ repeat = 2, nodes = [{ name = "r{i}", op = "relu" }, { name = "x{i}", op = "reluu" }] }"#,
                FC,
            ],
            1,
            "op = \"reluu",
            "node `x0`: unknown op `reluu`",
        ),
        // 15. a node without op
        (
            vec![r#"{ name = "c1", c_out = 4 }"#, FC],
            0,
            "{ name",
            "node `c1` has no `op`",
        ),
        // 16. an output that cannot be a class vector, known without the data
        (
            vec![c1],
            0,
            "op = ",
            "node `c1` is the output, but a conv gives a (C, …) map, not a vector of class scores",
        ),
        // 17. `input` is reserved
        (
            vec![r#"{ name = "input", op = "relu" }"#, FC],
            0,
            "name",
            "`input` names the network input",
        ),
    ]
}

#[test]
fn malformed_node_lists_are_located_at_the_node_and_key() {
    for (i, (nodes, line, at, msg)) in cases().into_iter().enumerate() {
        let t = text(&nodes);
        let e = match plan(t.clone()) {
            Ok(_) => panic!("case {}: accepted:\n{t}", i + 1),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert!(
            shown.contains(msg),
            "case {}: {shown:?} lacks {msg:?}",
            i + 1
        );
        let want_line = first_node_line() + line;
        let src = t.lines().nth(want_line - 1).unwrap();
        let want_col = src.find(at).unwrap() + 1;
        assert_eq!(
            (e.line, e.col),
            (Some(want_line), Some(want_col)),
            "case {}: {shown}\n{src}",
            i + 1
        );
        assert!(
            shown.starts_with(&format!("g.toml:{want_line}:{want_col}: ")),
            "case {}: {shown}",
            i + 1
        );
    }
}

/// A full configuration of arch `graph` is held to the same rules, located under `config`.
#[test]
fn a_full_graph_configuration_is_located_under_config() {
    let t = HEAD.replace(
        "arch = \"graph\"\n",
        "arch = \"full\"\nconfig = { arch = \"graph\", input = [3, 8, 8], classes = 3, nodes = [\n",
    ) + "{ name = \"a\", op = \"relu\" },\n{ name = \"a\", op = \"flatten\" },\n{ name = \"fc\", op = \"linear\" }] }\n";
    let e = plan(t.clone()).unwrap_err();
    // `config = {` is the line after the head, node 0 the next, the duplicate node 1 after it.
    let line = HEAD.lines().count() + 3;
    let src = t.lines().nth(line - 1).unwrap();
    assert_eq!(
        (e.line, e.col),
        (Some(line), Some(src.find("name").unwrap() + 1)),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("`model.config.nodes.1.name`: duplicate node name `a`"),
        "{e}"
    );
}

#[test]
fn an_empty_node_list_is_located_at_nodes() {
    let t = format!("{HEAD}nodes = []\n");
    let e = plan(t).unwrap_err();
    assert_eq!((e.line, e.col), (Some(HEAD.lines().count() + 1), Some(1)));
    assert!(e.to_string().contains("the graph has no nodes"), "{e}");
}

#[test]
fn a_valid_node_list_plans_with_a_stable_key_and_builds_against_the_data() {
    let nodes = [
        r#"{ name = "c1", op = "conv", c_out = 8, kernel = [3, 3], padding = "same" }"#,
        r#"{ name = "b1", op = "batch_norm" }"#,
        r#"{ name = "r1", op = "relu" }"#,
        r#"{ name = "c2", op = "conv", c_out = 8, kernel = [3, 3], padding = "same" }"#,
        r#"{ name = "s", op = "add", inputs = ["c2", "r1"] }"#,
        FC,
    ];
    let a = plan(text(&nodes)).unwrap();
    let b = plan(text(&nodes)).unwrap();
    let key = |p: &Plan| {
        p.nodes
            .iter()
            .find(|n| n.name == "net")
            .unwrap()
            .key
            .clone()
    };
    assert_eq!(key(&a), key(&b));
    // KWS items (49 frames × 10 coefficients) become a 1×49×10 image; 12 classes.
    let spec: ModelSpec =
        toml::from_str(&format!("arch = \"graph\"\nnodes = [{}]", nodes.join(", "))).unwrap();
    assert_eq!(spec.arch(), "graph");
    let g = spec.config(&[49, 10], 12).unwrap().build().unwrap();
    // c1 8·9 + 8 = 80, b1 16, c2 8·72 + 8 = 584, fc 8·12 + 12 = 108.
    assert_eq!(g.params(), 80 + 16 + 584 + 108);
    assert_eq!(g.input_shape, [1, 49, 10]);
    // A shape error once the data is known names node and key, with its path.
    let spec: ModelSpec = toml::from_str(
        "arch = \"graph\"\nnodes = [{ name = \"c\", op = \"conv\", c_out = 4, kernel = [11, 3] }, { name = \"fc\", op = \"linear\" }]",
    )
    .unwrap();
    spec.validate().unwrap();
    let e = spec.config(&[10, 10], 2).unwrap().build().unwrap_err();
    let p = param_error(&e, "model");
    assert_eq!(p.path, ["model", "nodes", "0", "kernel"]);
    assert!(
        p.message.contains("node `c`: kernel [11, 3]"),
        "{}",
        p.message
    );
}

#[test]
fn the_readme_example_parses_and_builds() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("[stages.net.model]\narch = \"graph\"").unwrap();
    let end = start + readme[start..].find("```").unwrap();
    let t: toml::Table = readme[start..end].parse().unwrap();
    let spec: ModelSpec = t["stages"]["net"]["model"].clone().try_into().unwrap();
    spec.validate().unwrap();
    let g = spec.config(&[3, 32, 32], 10).unwrap().build().unwrap();
    // c1 16·27 = 432, b1 32; per block dw 16·9 + 16 = 160, pw 16·16 + 16 = 272 → 2·432 = 864;
    // fc 16·10 + 10 = 170. blk1.add (node 8) reads blk1.pw (value 8) and blk0.add (value 6).
    assert_eq!(g.params(), 432 + 32 + 864 + 170);
    assert!(
        g.nodes
            .iter()
            .any(|n| n.name == "blk1.add" && n.inputs == [8, 6])
    );
}

/// A scratch folder removed on drop.
struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_text(model: &str) -> (whittle_engine::RunSummary, Scratch) {
    let t = format!(
        r#"[experiment]
name = "g"
seed = 1

[stages.data]
kind = "fetch"
dataset = {{ kind = "synthetic_images", train_per_class = 2, val_per_class = 1, test_per_class = 1 }}

[stages.net]
kind = "train"
inputs = ["data"]
epochs = 1
batch_size = 10
threads = 1
allow_divergence = true   # one epoch on 20 images: plumbing, not learning (may end at chance)

[stages.net.model]
arch = "graph"
{model}
"#
    );
    let dir = Scratch(std::env::temp_dir().join(format!(
        "whittle-graph-{}-{}",
        std::process::id(),
        blake3::hash(model.as_bytes()).to_hex()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let reg = whittle_stages::registry();
    let exp = Experiment::parse(&dir.0.join("g.toml"), t, &[], &reg).unwrap();
    let plan = Plan::build(exp, &reg).unwrap();
    let cache = whittle_engine::Cache::new(dir.0.join("cache"));
    let opts = whittle_engine::RunOptions {
        jobs: 2,
        cancel: whittle_engine::CancelToken::default(),
        reporter: whittle_engine::Reporter::Log,
    };
    let s = whittle_engine::run(&plan, &cache, &reg, &opts).unwrap();
    (s, dir)
}

/// Input shape and class count come from the data (3×32×32, 10 classes); a shape error found
/// only then fails the node with a message naming node and key.
#[test]
fn a_written_network_trains_through_the_train_stage() {
    let (s, _d) = run_text(
        r#"nodes = [
  { name = "c1", op = "conv", c_out = 4, kernel = [3, 3], stride = [2, 2], padding = "same" },
  { name = "b1", op = "batch_norm" }, { name = "r1", op = "hard_swish" },
  { name = "mp", op = "max_pool", kernel = [2, 2] },
  { name = "pool", op = "global_avg_pool" }, { name = "fc", op = "linear" },
]"#,
    );
    assert_eq!((s.ran, s.failed), (2, 0), "{:?}", s.failures);
    let (s, _d) = run_text(
        r#"nodes = [
  { name = "c1", op = "conv", c_out = 4, kernel = [40, 3] },
  { name = "pool", op = "global_avg_pool" }, { name = "fc", op = "linear" },
]"#,
    );
    assert_eq!(s.failed, 1, "{s:?}");
    let msg = &s.failures[0].1;
    assert!(
        msg.contains("node `c1`: kernel [40, 3]") && msg.contains("larger than its input [32, 32]"),
        "{msg}"
    );
}

/// 1-d items feed a vector network (an MLP) as they are.
#[test]
fn vector_items_feed_a_written_mlp() {
    let spec: ModelSpec = toml::from_str(
        "arch = \"graph\"\nnodes = [{ name = \"h\", op = \"linear\", c_out = 8 }, { name = \"r\", op = \"relu\" }, { name = \"out\", op = \"linear\" }]",
    )
    .unwrap();
    spec.validate().unwrap();
    let g = spec.config(&[20], 4).unwrap().build().unwrap();
    // h 20·8 + 8 = 168, out 8·4 + 4 = 36.
    assert_eq!((g.input_shape.clone(), g.params()), (vec![20], 168 + 36));
}

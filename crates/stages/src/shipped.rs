//! What ships is what is measured (issue 22): the `export` stage runs each file it wrote on the
//! test split — the ONNX files in tract (in-process, pure Rust), the C int8 source compiled
//! with the system C compiler and run as a program — scores it with the task metric, and counts
//! the test items whose prediction differs from the in-process network the report's rows were
//! measured on (the fp32 network for the float file, the int8 network of `crate::int8` for the
//! QDQ file and the C source).

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use whittle_export::ActQuant;
use whittle_nn::train::Trainable;
use whittle_nn::{DataSet, Split};

/// Items per call of a file's runtime.
const BATCH: usize = 100;

/// A file's runtime as a network the evaluation functions accept (inference only). Outputs
/// are kept by the hash of their input batch: the metric and the prediction count read the
/// same batches, and the file runs once for both.
pub struct FileNet {
    run: Box<dyn Fn(&[f32], usize) -> Result<Vec<f32>>>,
    /// Shape of one input item.
    item: Vec<usize>,
    seen: std::cell::RefCell<std::collections::HashMap<[u8; 32], Vec<f32>>>,
}

impl FileNet {
    fn new(run: Box<dyn Fn(&[f32], usize) -> Result<Vec<f32>>>, item: &[usize]) -> Self {
        Self {
            run,
            item: item.to_vec(),
            seen: Default::default(),
        }
    }
}

impl Trainable for FileNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let n = x.dim(0)?;
        let per: usize = self.item.iter().product();
        ensure!(
            x.elem_count() == n * per,
            "input of {:?} for items of shape {:?}",
            x.dims(),
            self.item
        );
        let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        let key = *blake3::hash(&bytes).as_bytes();
        if let Some(out) = self.seen.borrow().get(&key) {
            return Ok(Tensor::from_vec(
                out.clone(),
                (n, out.len() / n),
                &Device::Cpu,
            )?);
        }
        let mut out = Vec::new();
        for chunk in v.chunks(BATCH * per) {
            out.extend((self.run)(chunk, chunk.len() / per)?);
        }
        ensure!(
            !out.is_empty() && out.len() % n == 0,
            "the runtime returned {} values for {n} items",
            out.len()
        );
        let per_out = out.len() / n;
        self.seen.borrow_mut().insert(key, out.clone());
        Ok(Tensor::from_vec(out, (n, per_out), &Device::Cpu)?)
    }
    fn trainable_vars(&self) -> Vec<(String, candle_core::Var)> {
        Vec::new()
    }
    fn state_vars(&self) -> Vec<(String, candle_core::Var)> {
        Vec::new()
    }
}

/// The ONNX file at `path` in tract, `batch` items per run (1 for a static-batch file; the
/// last batch of a split is padded with zeros and its padding dropped).
pub fn onnx_net(path: &Path, item: &[usize], batch: usize) -> Result<FileNet> {
    use tract_onnx::prelude::*;
    let mut shape = vec![batch];
    shape.extend(item);
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("loading {} in tract", path.display()))?;
    let per: usize = item.iter().product();
    let file = path.display().to_string();
    let run = move |x: &[f32], n: usize| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(n);
        for part in x.chunks(batch * per) {
            let k = part.len() / per;
            let mut padded = part.to_vec();
            padded.resize(batch * per, 0.0);
            let t = tract_onnx::prelude::Tensor::from_shape(&shape, &padded)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let y = plan
                .run(tvec!(t.into()))
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("running {file} in tract"))?;
            let y: Vec<f32> = y[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .iter()
                .copied()
                .collect();
            out.extend_from_slice(&y[..y.len() / batch * k]);
        }
        Ok(out)
    };
    Ok(FileNet::new(Box::new(run), item))
}

/// The C compiler: `$CC`, else `cc`; `None` when it cannot be run.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    Command::new(&cc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| cc)
}

/// Which C runtime an export is: the int8 one (int8 in and out, outputs dequantized with the
/// output tensor's parameters) or the packed-weight float one (`whittle_export::c_packed`).
#[derive(Clone, Copy, Debug)]
pub enum CRuntime {
    Int8(ActQuant),
    Float,
}

/// The C export `stem` in `src_dir` compiled (in `work`, `cc -std=c99 -O2 -ffp-contract=off`)
/// with a main that reads items (f32, native endianness) from a file, runs them one by one and
/// writes the outputs, `jobs` processes at a time. `Ok(None)` when there is no C compiler.
pub fn c_net(
    src_dir: &Path,
    stem: &str,
    work: &Path,
    item: &[usize],
    runtime: CRuntime,
    jobs: usize,
) -> Result<Option<FileNet>> {
    let Some(cc) = c_compiler() else {
        return Ok(None);
    };
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let up = stem.to_uppercase();
    let (decl, run, out_bytes) = match runtime {
        CRuntime::Int8(_) => (
            format!(
                "static int8_t q[{up}_INPUT_SIZE], y[{up}_OUTPUT_SIZE], arena[{up}_ARENA_SIZE];"
            ),
            format!("{stem}_quantize_input(x, q); {stem}_run(q, y, arena);"),
            1,
        ),
        CRuntime::Float => (
            format!("static float y[{up}_OUTPUT_SIZE], arena[{up}_ARENA_SIZE];"),
            format!("{stem}_run(x, y, arena);"),
            4,
        ),
    };
    let main = format!(
        "#include <stdio.h>\n#include \"{stem}.h\"\n\
         int main(int argc, char **argv) {{\n\
           static float x[{up}_INPUT_SIZE];\n\
           {decl}\n\
           FILE *in, *out;\n\
           if (argc != 3 || !(in = fopen(argv[1], \"rb\")) || !(out = fopen(argv[2], \"wb\"))) return 2;\n\
           while (fread(x, sizeof(float), {up}_INPUT_SIZE, in) == {up}_INPUT_SIZE) {{\n\
             {run}\n\
             if (fwrite(y, sizeof(y[0]), {up}_OUTPUT_SIZE, out) != {up}_OUTPUT_SIZE) return 3;\n\
           }}\n\
           return fclose(out) == 0 ? 0 : 4;\n\
         }}\n"
    );
    let main_c = work.join(format!("eval_{stem}.c"));
    std::fs::write(&main_c, main).with_context(|| format!("writing {}", main_c.display()))?;
    let exe = work.join(format!("eval_{stem}"));
    let out = Command::new(&cc)
        .args(["-std=c99", "-O2", "-ffp-contract=off", "-I"])
        .arg(src_dir)
        .arg("-o")
        .arg(&exe)
        .arg(&main_c)
        .arg(src_dir.join(format!("{stem}.c")))
        .arg("-lm")
        .output()
        .with_context(|| format!("running the C compiler `{cc}`"))?;
    if !out.status.success() {
        bail!(
            "`{cc}` could not compile the exported {stem}.c:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let per: usize = item.iter().product();
    let jobs = jobs.max(1);
    let (work, stem) = (work.to_path_buf(), stem.to_string());
    // The items of a call split over `jobs` processes (the program is single-threaded); the
    // outputs are concatenated in item order, so the result does not depend on `jobs`.
    let run = move |x: &[f32], n: usize| -> Result<Vec<f32>> {
        let part = n.div_ceil(jobs).max(1) * per;
        let mut children = Vec::new();
        for (j, chunk) in x.chunks(part).enumerate() {
            let (inp, outp): (PathBuf, PathBuf) = (
                work.join(format!("{stem}_in{j}.bin")),
                work.join(format!("{stem}_out{j}.bin")),
            );
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_ne_bytes()).collect();
            std::fs::write(&inp, bytes)?;
            let child = Command::new(&exe)
                .arg(&inp)
                .arg(&outp)
                .spawn()
                .with_context(|| format!("running {}", exe.display()))?;
            children.push((child, outp));
        }
        let mut y = Vec::new();
        for (mut child, outp) in children {
            let st = child.wait()?;
            ensure!(st.success(), "the compiled C export exited with {st}");
            y.extend(std::fs::read(&outp)?);
        }
        ensure!(
            n > 0 && y.len() % (n * out_bytes) == 0,
            "the compiled C export wrote {} bytes for {n} items",
            y.len()
        );
        Ok(match runtime {
            CRuntime::Int8(q) => y.iter().map(|&b| q.dequantize(b as i8)).collect(),
            CRuntime::Float => y
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    };
    Ok(Some(FileNet::new(Box::new(run), item)))
}

/// Class predictions (argmax of each row, first maximum) of `net` on `x`.
pub fn predictions(net: &dyn Trainable, x: &Tensor) -> Result<Vec<u32>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let k = BATCH.min(n - start);
        let y = net.forward_t(&x.narrow(0, start, k)?, false)?;
        let y = y.flatten_from(1)?;
        let rows: Vec<Vec<f32>> = y.to_vec2()?;
        out.extend(rows.iter().map(|r| argmax(r)));
        start += k;
    }
    Ok(out)
}

fn argmax(r: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in r.iter().enumerate() {
        if v > r[best] {
            best = i;
        }
    }
    best as u32
}

/// One shipped file's row ([`row`]); a runtime that cannot be built (`Ok(None)`: no C
/// compiler) gives a `skipped` row, one that fails to load or run a `failed` row with the
/// error (logged; the exported files are kept either way).
pub fn measure(
    artifact: &str,
    net: Result<Option<FileNet>>,
    reference: &dyn Trainable,
    data: &DataSet,
    ds: &whittle_data::Dataset,
    test: &Split,
) -> Value {
    let r = match net {
        Ok(None) => {
            return json!({
                "artifact": artifact,
                "skipped": "no C compiler (`cc` or $CC) on this machine",
            });
        }
        Ok(Some(net)) => row(artifact, &net, reference, data, ds, test),
        Err(e) => Err(e),
    };
    r.unwrap_or_else(|e| {
        tracing::warn!("running the exported {artifact} file: {e:#}");
        json!({ "artifact": artifact, "failed": format!("{e:#}") })
    })
}

/// One shipped file's row: its task metric on the test split and, for classification, how many
/// test predictions differ from `reference`'s (the in-process network of the report).
pub fn row(
    artifact: &str,
    net: &dyn Trainable,
    reference: &dyn Trainable,
    data: &DataSet,
    ds: &whittle_data::Dataset,
    test: &Split,
) -> Result<Value> {
    let value = crate::task::metric_value(net, data, ds, test)?;
    let in_process = crate::task::metric_value(reference, data, ds, test)?;
    let mut r = json!({
        "artifact": artifact,
        "value": value,
        "in_process": in_process,
        "items": test.len(),
    });
    if ds.task == whittle_data::Task::Classification {
        let a = predictions(net, &test.x)?;
        let b = predictions(reference, &test.x)?;
        r["differ"] = json!(a.iter().zip(&b).filter(|(x, y)| x != y).count());
    }
    Ok(r)
}

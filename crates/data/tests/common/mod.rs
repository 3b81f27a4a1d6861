//! Test helpers: fixture trees in the real formats (Speech Commands WAV layout, CIFAR-10
//! binary batches), tar.gz packing, and a tiny local HTTP server that counts requests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes a WAV with the given format; samples are a deterministic tone of `len` frames.
pub fn write_wav(path: &Path, len: usize, channels: u16, rate: u32, bits: u16, freq: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..len {
        let v = 0.3 * (2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64).sin();
        for _ in 0..channels {
            match bits {
                8 => w.write_sample((v * 127.0) as i8).unwrap(),
                _ => w.write_sample((v * 32767.0) as i16).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

/// A Speech Commands tree: keywords yes/no, other words cat/dog, 4 clips each
/// (`*_nohash_0..3.wav`: 0, 1 train, 2 validation, 3 testing), one 3 s background-noise file.
/// `yes/a_nohash_1.wav` is half a second long (zero padding).
pub fn speech_tree(root: &Path) {
    let mut val = String::new();
    let mut test = String::new();
    for (w, word) in ["yes", "no", "cat", "dog"].iter().enumerate() {
        for i in 0..4 {
            let len = if *word == "yes" && i == 1 {
                8000
            } else {
                16000
            };
            let name = format!("a_nohash_{i}.wav");
            write_wav(
                &root.join(word).join(&name),
                len,
                1,
                16000,
                16,
                300.0 + 200.0 * w as f64 + 37.0 * i as f64,
            );
            match i {
                2 => val.push_str(&format!("{word}/{name}\n")),
                3 => test.push_str(&format!("{word}/{name}\n")),
                _ => {}
            }
        }
    }
    std::fs::write(root.join("validation_list.txt"), val).unwrap();
    std::fs::write(root.join("testing_list.txt"), test).unwrap();
    let noise = root.join("_background_noise_").join("white_noise.wav");
    std::fs::create_dir_all(noise.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&noise, spec).unwrap();
    let mut s = 1u32;
    for _ in 0..48000 {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        w.write_sample(((s >> 16) as i16) / 4).unwrap();
    }
    w.finalize().unwrap();
}

/// One CIFAR record: label + planes where pixel (c, r, k) = (label*20 + idx*3 + c*50 + r + k) % 256.
pub fn cifar_record(label: u8, idx: usize) -> Vec<u8> {
    let mut v = vec![label];
    for c in 0..3 {
        for p in 0..1024 {
            v.push(((label as usize * 20 + idx * 3 + c * 50 + p / 32 + p % 32) % 256) as u8);
        }
    }
    v
}

/// A CIFAR-10 binary folder: 5 training batches of 20 records (2 per class; record ids
/// b*20+j), a test batch of 10 records (one per class) and batches.meta.txt.
pub fn cifar_tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 0..5 {
        let bytes: Vec<u8> = (0..20)
            .flat_map(|j| cifar_record((j % 10) as u8, b * 20 + j))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..10)
        .flat_map(|j| cifar_record(j as u8, 1000 + j))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
}

/// Packs `dir` as `prefix/…` into a .tar.gz at `out`.
pub fn tar_gz(dir: &Path, prefix: &str, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.append_dir_all(prefix, dir).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

/// Serves `body` for GET /<anything> (404 for paths containing "missing"); returns the base
/// URL and the request counter.
pub fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            if line.contains("missing") {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        }
    });
    (format!("http://{addr}"), count)
}

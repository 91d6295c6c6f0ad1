//! Times this crate's mu-law codec on given input files; the Rust half of
//! `scripts/bench-codec-vs-audioop.sh` (which times CPython's `audioop` on the same bytes).
//!
//! Usage: cargo run --release -p mulaw --example codec_throughput -- \
//!            MULAW_IN PCM16LE_IN DECODED_OUT ENCODED_OUT [REPEATS]
//! Prints one line per operation: `name seconds_per_call`, the best of REPEATS rounds
//! (each round is enough calls to last ~50 ms). Writes the decode/encode outputs so the script
//! can check they equal audioop's byte for byte.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn best_seconds_per_call(repeats: u32, mut operation: impl FnMut()) -> f64 {
    // Calibrate: enough calls per round to run for ~50 ms.
    let mut calls_per_round = 1_u32;
    loop {
        let started = Instant::now();
        for _ in 0..calls_per_round {
            operation();
        }
        if started.elapsed() >= Duration::from_millis(50) || calls_per_round >= 1 << 24 {
            break;
        }
        calls_per_round *= 2;
    }
    (0..repeats)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls_per_round {
                operation();
            }
            started.elapsed().as_secs_f64() / f64::from(calls_per_round)
        })
        .fold(f64::INFINITY, f64::min)
}

fn run(args: &[String]) -> Result<(), String> {
    let [mulaw_in, pcm_in, decoded_out, encoded_out, rest @ ..] = args else {
        return Err(
            "usage: codec_throughput MULAW_IN PCM16LE_IN DECODED_OUT ENCODED_OUT [REPEATS]"
                .to_owned(),
        );
    };
    let repeats: u32 = match rest.first() {
        Some(text) => text
            .parse()
            .map_err(|_| format!("REPEATS must be a number: {text}"))?,
        None => 7,
    };
    let read = |path: &String| std::fs::read(path).map_err(|e| format!("reading {path}: {e}"));
    let mulaw_bytes = read(mulaw_in)?;
    let pcm = mulaw::pcm16le_to_samples(&read(pcm_in)?).map_err(|e| e.to_string())?;

    let mut decoded = vec![0_i16; mulaw_bytes.len()];
    let mut encoded = vec![0_u8; pcm.len()];
    let decode_into = best_seconds_per_call(repeats, || {
        mulaw::decode_into(black_box(&mulaw_bytes), black_box(&mut decoded)).ok();
    });
    let decode_vec = best_seconds_per_call(repeats, || {
        black_box(mulaw::decode(black_box(&mulaw_bytes)));
    });
    let encode_into = best_seconds_per_call(repeats, || {
        mulaw::encode_into(black_box(&pcm), black_box(&mut encoded)).ok();
    });
    let encode_vec = best_seconds_per_call(repeats, || {
        black_box(mulaw::encode(black_box(&pcm)));
    });
    println!("decode_into {decode_into:.9}");
    println!("decode {decode_vec:.9}");
    println!("encode_into {encode_into:.9}");
    println!("encode {encode_vec:.9}");

    let write = |path: &String, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| format!("writing {path}: {e}"))
    };
    write(decoded_out, &mulaw::samples_to_pcm16le(&decoded))?;
    write(encoded_out, &encoded)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("codec_throughput: {message}");
            ExitCode::FAILURE
        }
    }
}

//! `dci-bench`: the measuring tools behind `scripts/bench-backup`. Every figure is printed beside
//! a reference measured in the same run; nothing here asserts a time.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use rand::{Rng, RngCore, SeedableRng};

#[derive(Debug, Parser)]
#[command(name = "dci-bench", about = "Benchmark tools for DCI backups")]
struct Cli {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Write a tree of mixed files (text-like and random, 1 KiB to 8 MiB) totalling about BYTES.
    GenTree {
        /// Where.
        dir: PathBuf,
        /// About how many bytes.
        #[arg(long)]
        bytes: u64,
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Change about PERCENT of the tree's bytes: edits inside files, new files, deletions.
    Change {
        /// The tree.
        dir: PathBuf,
        /// Percent of the bytes.
        #[arg(long, default_value_t = 1.0)]
        percent: f64,
        /// RNG seed.
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
    /// Content-defined chunking + BLAKE3 on one core, beside BLAKE3 alone on the same data.
    Chunk {
        /// Bytes of random data.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: usize,
    },
    /// Raw loopback TCP throughput, one connection.
    Tcp {
        /// Bytes to send.
        #[arg(long, default_value_t = 4 << 30)]
        bytes: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Tool::GenTree { dir, bytes, seed } => gen_tree(&dir, bytes, seed),
        Tool::Change { dir, percent, seed } => change(&dir, percent, seed),
        Tool::Chunk { bytes } => {
            chunk(bytes);
            Ok(())
        }
        Tool::Tcp { bytes } => tcp(bytes),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dci-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Text-like bytes (compressible, like source and logs) or random ones (like media).
fn content(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    if rng.gen_bool(0.5) {
        rng.fill_bytes(&mut v);
    } else {
        const WORDS: [&[u8]; 8] = [
            b"backup ",
            b"blade ",
            b"holder ",
            b"archive ",
            b"delta ",
            b"12345 ",
            b"\n",
            b"fn x() ",
        ];
        let mut i = 0;
        while i < len {
            let w = WORDS[rng.gen_range(0..WORDS.len())];
            let n = w.len().min(len - i);
            v[i..i + n].copy_from_slice(&w[..n]);
            i += n;
        }
    }
    v
}

fn gen_tree(dir: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total = 0u64;
    let mut n = 0u64;
    while total < bytes {
        let sub = dir.join(format!("d{}/e{}", n % 13, n % 7));
        fs::create_dir_all(&sub)?;
        // Log-uniform sizes: many small files, most bytes in large ones.
        let len = (1024f64 * 2f64.powf(rng.gen_range(0.0..13.0))) as usize;
        let len = len.min((bytes - total) as usize).max(1);
        fs::write(sub.join(format!("f{n}.dat")), content(&mut rng, len))?;
        total += len as u64;
        n += 1;
    }
    println!("{{\"files\": {n}, \"bytes\": {total}}}");
    Ok(())
}

fn files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let m = e.metadata()?;
        if m.is_dir() {
            files(&e.path(), out)?;
        } else {
            out.push((e.path(), m.len()));
        }
    }
    Ok(())
}

fn change(dir: &Path, percent: f64, seed: u64) -> std::io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut all = Vec::new();
    files(dir, &mut all)?;
    let total: u64 = all.iter().map(|(_, l)| l).sum();
    let budget = (total as f64 * percent / 100.0) as u64;
    // A third each: edits inside large files, new files, deleted files.
    let (mut edited, mut added, mut deleted) = (0u64, 0u64, 0u64);
    while edited < budget / 3 {
        let (path, len) = &all[rng.gen_range(0..all.len())];
        if *len < 64 << 10 {
            continue;
        }
        let mut data = fs::read(path)?;
        let n = rng.gen_range(1024..64 << 10).min(data.len() / 2);
        let at = rng.gen_range(0..data.len() - n);
        let patch = content(&mut rng, n);
        data[at..at + n].copy_from_slice(&patch);
        fs::write(path, data)?;
        edited += n as u64;
    }
    let mut k = 0;
    while added < budget / 3 {
        let len = rng.gen_range(1024..256 << 10);
        fs::write(dir.join(format!("new-{k}.dat")), content(&mut rng, len))?;
        added += len as u64;
        k += 1;
    }
    while deleted < budget / 3 {
        let i = rng.gen_range(0..all.len());
        let (path, len) = all.swap_remove(i);
        if fs::remove_file(&path).is_ok() {
            deleted += len;
        }
    }
    println!(
        "{{\"edited\": {edited}, \"added\": {added}, \"deleted\": {deleted}, \"tree\": {total}}}"
    );
    Ok(())
}

fn chunk(bytes: usize) {
    let mut data = vec![0u8; bytes];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
    let start = Instant::now();
    let mut n = 0usize;
    for c in dci::store::chunk::chunks(&data[..]) {
        std::hint::black_box(c.map(|c| c.id).ok());
        n += 1;
    }
    let chunked = start.elapsed().as_secs_f64();
    let start = Instant::now();
    std::hint::black_box(blake3::hash(&data));
    let hashed = start.elapsed().as_secs_f64();
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    println!(
        "{{\"bytes\": {bytes}, \"chunks\": {n}, \"chunk_hash_gb_s\": {:.2}, \"blake3_only_gb_s\": {:.2}}}",
        gbs(chunked),
        gbs(hashed)
    );
}

fn tcp(bytes: u64) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\": {got}, \"tcp_mb_s\": {:.0}}}",
        got as f64 / secs / 1e6
    );
    Ok(())
}

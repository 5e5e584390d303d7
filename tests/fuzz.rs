//! The fuzz targets (`fuzz/`) as part of `cargo test --workspace` (issue 11, "Fuzzing in CI";
//! `docs/lab.md` §"Fuzzing").
//!
//! Two layers:
//! - [`every_target_holds_on_its_checked_in_corpus`] runs each target's body (`fuzz/src/lib.rs`,
//!   included below, the very code the libFuzzer targets call) over every file of its corpus
//!   (`fuzz/corpus/TARGET/`) on the stable toolchain, without libFuzzer: always on, and fast;
//! - [`every_target_survives_a_short_libfuzzer_run`] runs each target under libFuzzer (cargo-fuzz
//!   on the stable toolchain with `RUSTC_BOOTSTRAP=1`) for [`SECONDS_PER_TARGET`] with a fixed
//!   seed, on a copy of its corpus, and fails naming the target and the reproducer. Without
//!   cargo-fuzz it skips with a message, and fails with it in CI (`CI` set; `.ci/run` installs
//!   cargo-fuzz).

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use shipworm_tests::lab::{cannot_run, tail};

/// How long libFuzzer runs each target in CI. Five targets: about 75 s of fuzzing on top of the
/// one instrumented build (about 6 minutes on two shared cores from clean; `docs/lab.md`).
const SECONDS_PER_TARGET: u32 = 15;
/// libFuzzer's seed: one seed, one sequence of mutations (up to where the time limit cuts it).
const SEED: u32 = 11;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn corpus(target: &str) -> PathBuf {
    repo().join("fuzz/corpus").join(target)
}

/// The files of `dir`, sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`: the targets cargo-fuzz knows.
fn declared_targets() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("fuzz/Cargo.toml"))
        .expect("fuzz/Cargo.toml is readable");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line.strip_prefix("name = ").filter(|_| in_bin) {
            names.push(value.trim_matches('"').to_string());
        }
    }
    names.sort();
    names
}

#[test]
fn every_declared_target_has_a_body_and_a_corpus() {
    let bodies: Vec<&str> = bodies::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        declared_targets(),
        bodies,
        "fuzz/Cargo.toml's [[bin]] targets and fuzz/src/lib.rs's TARGETS must name the same targets"
    );
    for name in bodies {
        let n = files(&corpus(name)).len();
        assert!(
            n >= 4,
            "fuzz/corpus/{name}/ holds {n} files; seed it (cargo run -p shipworm-tests --example \
             fuzz_seeds) and minimise it (docs/lab.md §\"Fuzzing\")"
        );
    }
}

#[test]
fn every_target_holds_on_its_checked_in_corpus() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (name, body) in bodies::TARGETS {
        for file in files(&corpus(name)) {
            let data = std::fs::read(&file).expect("corpus file is readable");
            runs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{name} on {}: {why}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} corpus inputs break their target's property:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether `cargo fuzz` is installed.
fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `cargo fuzz` with what it needs on the stable toolchain, from the repository root, without the
/// variables `cargo test` sets for this test (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, ...): build
/// scripts read some of them, and with them the fuzz build would differ from, and not reuse, the
/// one a developer makes by hand with the same command.
fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.arg("fuzz")
        .current_dir(repo())
        .env("RUSTC_BOOTSTRAP", "1");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if set_by_cargo {
            c.env_remove(&*key);
        }
    }
    c
}

/// What a failed libFuzzer run says about the failure: the panic and its message (up to the
/// backtrace), libFuzzer's last progress line (how many inputs it ran) and where it wrote the
/// input; the last lines of its output when it said none of that (a crash that is no panic).
fn failure_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    if let Some(progress) = lines.iter().rfind(|l| l.starts_with('#')) {
        out.push(*progress);
    }
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        out.extend(
            lines[at..]
                .iter()
                .take_while(|l| !l.starts_with("stack backtrace") && !l.starts_with("note:"))
                .take(12),
        );
    }
    out.extend(lines.iter().filter(|l| l.contains("Test unit written to")));
    if out.len() < 2 {
        return tail(&String::from_utf8_lossy(stderr), 40);
    }
    out.join("\n")
}

#[test]
fn every_target_survives_a_short_libfuzzer_run() {
    if !has_cargo_fuzz() {
        cannot_run(
            "cargo-fuzz is not installed: `cargo install --locked cargo-fuzz` (.ci/run installs it)",
        );
        return;
    }
    // One build for every target, outside the time each target gets.
    let build = cargo_fuzz()
        .args(["build", "-O"])
        .output()
        .expect("cargo fuzz build starts");
    assert!(
        build.status.success(),
        "RUSTC_BOOTSTRAP=1 cargo fuzz build -O failed:\n{}",
        tail(&String::from_utf8_lossy(&build.stderr), 40)
    );
    let mut failures = Vec::new();
    for (name, _) in bodies::TARGETS {
        let work = tempfile::Builder::new()
            .prefix(&format!("shipworm-fuzz-{name}-"))
            .tempdir()
            .expect("temporary directory");
        // libFuzzer writes what it finds into the first corpus directory: a copy, not the repo's.
        let corpus_copy = work.path().join("corpus");
        let artifacts = work.path().join("artifacts");
        std::fs::create_dir_all(&corpus_copy).expect("corpus copy");
        std::fs::create_dir_all(&artifacts).expect("artifacts directory");
        for file in files(&corpus(name)) {
            std::fs::copy(
                &file,
                corpus_copy.join(file.file_name().expect("file name")),
            )
            .expect("copy a corpus file");
        }
        let run = cargo_fuzz()
            .args(["run", "-O", name])
            .arg(&corpus_copy)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
            .arg(format!("-seed={SEED}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .output()
            .expect("cargo fuzz run starts");
        if !run.status.success() {
            let found = files(&artifacts);
            let work = work.keep();
            let replay = found
                .first()
                .map(|p| {
                    format!(
                        "reproducer {} ({} bytes); replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz \
                         run -O {name} {}`",
                        p.display(),
                        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                        p.display()
                    )
                })
                .unwrap_or_else(|| format!("no reproducer was written (see {})", work.display()));
            failures.push(format!(
                "fuzz target {name} failed within {SECONDS_PER_TARGET} s (seed {SEED}): {replay}\n\
                 {}",
                failure_summary(&run.stderr)
            ));
            continue;
        }
        let stats = String::from_utf8_lossy(&run.stderr);
        let done = stats
            .lines()
            .rfind(|l| l.starts_with("Done "))
            .unwrap_or("(no summary)");
        eprintln!("fuzz target {name}: {done}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

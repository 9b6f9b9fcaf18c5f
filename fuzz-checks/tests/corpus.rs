//! Every saved fuzz input — the seeds in `fuzz/corpus/<target>/`, including each input
//! that ever crashed a target (`regression-*`), and any crash cargo-fuzz left in
//! `fuzz/artifacts/<target>/` — replayed through its target's check on the stable
//! toolchain. A failure names the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use signet_fuzz_checks::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_saved_input_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "{target}: no corpus under {}",
            fuzz.display()
        );
        let crashes = inputs(&fuzz.join("artifacts").join(target));
        for file in corpus.iter().chain(&crashes) {
            let data = std::fs::read(file).expect("read an input");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their target: {failed:?}"
    );
}

#[test]
fn each_target_has_its_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (target, _) in TARGETS {
        let source =
            std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{target}.rs")))
                .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(
            source.contains(&format!("signet_fuzz_checks::{target}")),
            "fuzz_targets/{target}.rs runs the shared check"
        );
    }
}

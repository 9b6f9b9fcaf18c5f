//! Embeds the metadata migrations: every `migrations/<engine>/NNNN_<name>.sql`, in
//! version order, so that adding a migration is adding its file.

use std::path::Path;

const ENGINES: [&str; 2] = ["sqlite", "postgres"];

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut code = String::new();
    for engine in ENGINES {
        let dir = Path::new(&root).join("migrations").join(engine);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut found: Vec<(i64, String, String)> = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("sql") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let (version, name) = stem
                .split_once('_')
                .and_then(|(v, n)| Some((v.parse::<i64>().ok()?, n)))
                .unwrap_or_else(|| panic!("{}: not NNNN_<name>.sql", path.display()));
            found.push((version, name.replace('_', " "), path.display().to_string()));
        }
        found.sort();
        if let Some(w) = found.windows(2).find(|w| w[0].0 == w[1].0) {
            panic!("{engine}: two migrations numbered {}", w[0].0);
        }
        code.push_str(&format!(
            "/// `migrations/{engine}/`, in version order.\npub(crate) const {}: &[(i64, &str, &str)] = &[\n",
            engine.to_uppercase()
        ));
        for (version, name, path) in found {
            code.push_str(&format!(
                "    ({version}, {name:?}, include_str!({path:?})),\n"
            ));
        }
        code.push_str("];\n");
    }
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(out, code).expect("writing the migration list");
}

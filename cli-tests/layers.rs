//! The source tree keeps data flowing one way, io → geometry → render → pipeline → the rest
//! (results, server, cli, ...): a module may use the layers below it, never one above. Tests may
//! reach up (a pipeline test builds a synthetic scene), so code after `#[cfg(test)]` and comments
//! are not checked.
use std::path::Path;

const LAYERS: [(&str, usize); 6] = [("io", 0), ("device", 0), ("geometry", 1), ("nn", 2), ("render", 2), ("pipeline", 3)];
const ABOVE: [&str; 9] = ["results", "synth", "eval", "viz", "weights", "protocol", "server", "cli", "client"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for (module, my_rank) in LAYERS {
        let mut files = Vec::new();
        let (dir, file) = (src.join(module), src.join(format!("{module}.rs")));
        if dir.is_dir() {
            sources(&dir, &mut files);
        } else {
            files.push(file);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for target in LAYERS.iter().map(|(m, _)| *m).chain(ABOVE) {
                    let higher = target != module && rank(target).map_or(true, |r| r > my_rank);
                    let uses = [format!("crate::{target}::"), format!("crate::{target};")].iter().any(|p| line.contains(p.as_str()));
                    if higher && uses {
                        problems.push(format!("{}:{}: {module} uses {target}: {}", f.strip_prefix(&src).unwrap().display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "imports that run up the layers:\n{}", problems.join("\n"));
}

/// The PEM's parts sit below its model: a part that the model uses must not use the model.
#[test]
fn pem_parts_do_not_use_the_model_that_uses_them() {
    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline/pem");
    let model = std::fs::read_to_string(pem.join("model.rs")).unwrap();
    let parts: Vec<&str> = model.lines().filter_map(|l| l.strip_prefix("use super::")).map(|rest| rest.split([':', ';']).next().unwrap()).collect();
    assert!(parts.len() >= 5, "model.rs uses {parts:?}");
    for part in parts {
        let text = std::fs::read_to_string(pem.join(format!("{part}.rs"))).unwrap();
        assert!(!text.contains("super::model"), "pipeline/pem/{part}.rs uses the model, which uses it");
    }
}

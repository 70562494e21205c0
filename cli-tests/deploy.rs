//! The container recipe in deploy/ cannot be built here (no Docker), so what can rot is checked:
//! every file it copies exists, its install step is the README's command, and every `sam6d`
//! flag in the compose and Kubernetes files is one `sam6d serve` accepts.
use super::sam6d;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_dockerfile_copies_files_that_exist_and_installs_with_the_readme_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docker = read("deploy/Dockerfile");
    let readme = read("README.md");
    let mut copies = 0;
    for line in docker.lines().map(str::trim).filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue; // from an earlier stage, not the build context
        }
        for src in &words[..words.len() - 1] {
            assert!(root.join(src).exists(), "deploy/Dockerfile copies {src}, which the repo lacks");
            copies += 1;
        }
    }
    assert!(copies > 0, "the Dockerfile copies nothing from the repo");
    let installs: Vec<&str> = docker.lines().filter_map(|l| l.trim().strip_prefix("RUN ")).filter(|c| c.contains("scripts/")).collect();
    assert!(!installs.is_empty(), "the Dockerfile does not run the project's set-up");
    for cmd in installs {
        assert!(readme.contains(cmd.trim()), "the Dockerfile runs `{cmd}`, which is not the README's command");
        for word in cmd.split_whitespace().filter(|w| w.starts_with("scripts/")) {
            assert!(root.join(word).exists(), "{word} is missing");
        }
    }
    // What the image leaves out is built inside it, never copied from a developer's tree.
    let ignore = read(".dockerignore");
    for built in ["target", ".venv", "weights", "data"] {
        assert!(ignore.lines().any(|l| l.trim() == built), ".dockerignore should leave out {built}");
    }
}

#[test]
fn compose_and_kubernetes_pass_only_flags_that_serve_knows() {
    let help = String::from_utf8(sam6d(&["serve", "--help"]).stdout).unwrap();
    for file in ["deploy/compose.yaml", "deploy/kubernetes.yaml"] {
        let text = read(file);
        let flags: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"serve\""))
            .flat_map(|l| l.split('"'))
            .filter(|w| w.starts_with("--"))
            .collect();
        assert!(flags.len() >= 3, "{file}: no sam6d serve command found");
        for flag in flags {
            assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "{file} passes {flag}, which `sam6d serve` does not know");
        }
        assert!(text.contains("haproxy.cfg"), "{file} does not use deploy/haproxy.cfg");
        for i in 1..=3 {
            assert!(text.contains(&format!("SAM6D_BACKEND_{i}")), "{file}: haproxy.cfg needs SAM6D_BACKEND_{i}");
        }
    }
}

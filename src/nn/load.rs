use std::collections::BTreeSet;
use tch::{nn, Tensor};

/// What [`load_named`] found: names the store wanted but the file lacks, and names in the file
/// that the store has no place for.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
}

/// Copies tensors into the variables of `vs` with the same name. Names under none of the
/// `prefixes` are ignored (a full SAM checkpoint also holds the prompt encoder and mask decoder);
/// shape mismatches are errors.
pub fn load_named(vs: &nn::VarStore, tensors: &[(String, Tensor)], prefixes: &[&str]) -> anyhow::Result<LoadReport> {
    let mut vars = vs.variables();
    let mut report = LoadReport::default();
    let mut seen = BTreeSet::new();
    tch::no_grad(|| -> anyhow::Result<()> {
        for (name, t) in tensors {
            if !prefixes.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            match vars.get_mut(name) {
                Some(v) => {
                    anyhow::ensure!(v.size() == t.size(), "{name}: the checkpoint has shape {:?}, the network expects {:?}", t.size(), v.size());
                    v.copy_(t);
                    seen.insert(name.clone());
                    report.loaded += 1;
                }
                None => report.unexpected.push(name.clone()),
            }
        }
        Ok(())
    })?;
    report.missing = vars.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    report.missing.sort();
    Ok(report)
}

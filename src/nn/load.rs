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

/// Names listed in a load error before "and N more".
const LISTED: usize = 8;

/// The first few of `names`, then how many more: for error messages.
fn listed(names: &[String]) -> String {
    let mut s = names.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > LISTED {
        s += &format!(" and {} more", names.len() - LISTED);
    }
    s
}

impl LoadReport {
    /// For strict loading (PyTorch's `load_state_dict(strict=True)`): the file's tensors under
    /// none of `prefixes`, which [`load_named`] skips, count as unexpected too.
    pub fn add_foreign(&mut self, tensors: &[(String, Tensor)], prefixes: &[&str]) {
        self.unexpected.extend(tensors.iter().map(|(n, _)| n).filter(|n| !prefixes.iter().any(|p| n.starts_with(p))).cloned());
        self.unexpected.sort();
    }

    /// What does not fit ("3 parameters missing (…) 1 unexpected tensors (…)"), or `None`.
    pub fn mismatch(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("{} parameters missing ({})", self.missing.len(), listed(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("{} unexpected tensors ({})", self.unexpected.len(), listed(&self.unexpected)));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

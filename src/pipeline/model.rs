//! An object the pipeline looks for: its mesh in millimetres plus everything derived from it
//! once (surface samples, the PPF table, a light mesh for verification), shared read-only.
use super::geometric::{ModelData, Params};
use crate::geometry::Mesh;
use anyhow::Context;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CadUnit {
    /// Millimetres (SAM-6D's and BOP's convention).
    #[default]
    Mm,
    /// Metres: scaled by 1000 on load.
    M,
}

pub struct ObjectModel {
    pub name: String,
    pub mesh: Mesh,
    /// Largest distance between two vertices, mm.
    pub diameter: f32,
    pub(crate) geometric: ModelData,
}

impl ObjectModel {
    pub fn load(path: &Path, unit: CadUnit) -> anyhow::Result<ObjectModel> {
        let mut mesh = crate::geometry::ply::read_ply(path).with_context(|| format!("loading CAD model {}", path.display()))?;
        if unit == CadUnit::M {
            for v in &mut mesh.vertices {
                *v *= 1000.0;
            }
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "object".into());
        let model = ObjectModel::from_mesh(&name, mesh).with_context(|| format!("preparing CAD model {}", path.display()))?;
        if unit == CadUnit::Mm && model.diameter < 1.0 {
            tracing::warn!(
                "CAD model {} is only {:.3} units across: it looks like metres; pass --cad-unit m",
                path.display(),
                model.diameter
            );
        }
        Ok(model)
    }

    pub fn from_mesh(name: &str, mesh: Mesh) -> anyhow::Result<ObjectModel> {
        Self::from_mesh_with(name, mesh, Params::default())
    }

    /// As [`ObjectModel::from_mesh`], with non-default tuning of the geometric stages.
    pub fn from_mesh_with(name: &str, mesh: Mesh, params: Params) -> anyhow::Result<ObjectModel> {
        anyhow::ensure!(!mesh.vertices.is_empty(), "the model has no vertices");
        anyhow::ensure!(!mesh.faces.is_empty(), "the model has no faces: a triangle mesh is needed to render and verify poses");
        anyhow::ensure!(mesh.vertices.iter().all(|v| v.iter().all(|c| c.is_finite())), "the model has non-finite vertex coordinates");
        let diameter = mesh.diameter();
        anyhow::ensure!(diameter > 0.0, "the model is degenerate (all vertices coincide)");
        let geometric = ModelData::build(&mesh, diameter, params);
        Ok(ObjectModel { name: name.to_string(), mesh, diameter, geometric })
    }
}

/// The PLY files named on the command line: a file, or a folder (a BOP `models/` directory)
/// whose `*.ply` files are all taken, sorted by name. Names (file stems) must be unique, since
/// clients and result files tell models apart by name.
pub fn model_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("reading model folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ply")))
                .collect();
            anyhow::ensure!(!found.is_empty(), "model folder {} holds no .ply file", path.display());
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    anyhow::ensure!(!files.is_empty(), "no CAD model given");
    let stem = |p: &std::path::Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    for (i, f) in files.iter().enumerate() {
        if let Some(j) = files[..i].iter().position(|o| stem(o) == stem(f)) {
            anyhow::bail!(
                "two models are named '{}' ({} and {}): models are picked by file name, so names must differ",
                stem(f).unwrap_or_default(),
                files[j].display(),
                f.display()
            );
        }
    }
    Ok(files)
}

/// Loads every model named on the command line ([`model_files`]), in parallel.
pub fn load_models(paths: &[std::path::PathBuf], unit: CadUnit) -> anyhow::Result<Vec<ObjectModel>> {
    use rayon::prelude::*;
    let files = model_files(paths)?;
    files.par_iter().map(|p| ObjectModel::load(p, unit)).collect()
}

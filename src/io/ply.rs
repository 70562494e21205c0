//! PLY meshes (ASCII, binary little/big endian) via the maintained `ply-rs-bw` fork.
use super::InputError;
use crate::geometry::Mesh;
use std::path::Path;

pub fn read_ply(path: &Path) -> Result<Mesh, InputError> {
    let bytes = super::read_file(path)?;
    parse_ply(&bytes, &path.display().to_string())
}

pub fn parse_ply(bytes: &[u8], what: &str) -> Result<Mesh, InputError> {
    todo!("helper")
}

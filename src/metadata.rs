//! The charm's own description: its name (the `charm` resource attribute) and its `requires`
//! endpoints with their interfaces (where the tracing relations are), from `metadata.yaml`, or
//! from `charmcraft.yaml` for charms that keep everything there.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CharmMetadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub requires: BTreeMap<String, Endpoint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Endpoint {
    #[serde(default)]
    pub interface: Option<String>,
}

impl CharmMetadata {
    /// Reads `metadata.yaml`, else `charmcraft.yaml`; `Err` describes a file that exists but
    /// cannot be parsed, `Ok(None)` means neither exists.
    pub fn load(charm_dir: &Path) -> Result<Option<CharmMetadata>, String> {
        for file in ["metadata.yaml", "charmcraft.yaml"] {
            let path = charm_dir.join(file);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    return CharmMetadata::parse(&bytes)
                        .map(Some)
                        .map_err(|e| format!("{}: {e}", path.display()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(None)
    }

    /// Parses the text of `metadata.yaml` or `charmcraft.yaml` (keys we do not use are ignored).
    pub fn parse(bytes: &[u8]) -> Result<CharmMetadata, serde_yaml::Error> {
        serde_yaml::from_slice(bytes)
    }

    /// The first `requires` endpoint (by name) with this interface.
    pub fn endpoint_for(&self, interface: &str) -> Option<&str> {
        self.requires
            .iter()
            .find(|(_, e)| e.interface.as_deref() == Some(interface))
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charm_name_is_read_from_metadata() {
        let meta: CharmMetadata = serde_yaml::from_str(
            "name: tempo-user\nrequires:\n  charm-tracing:\n    interface: tracing\n",
        )
        .unwrap();
        assert_eq!(meta.name.as_deref(), Some("tempo-user"));
    }
}

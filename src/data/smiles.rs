//! SMILES validity and canonical form as RDKit decides them (`MolFromSmiles`: the parse, then
//! sanitization: valences, kekulization of aromatic rings, aromaticity), through the
//! `cosmolkit` crate, a port of RDKit's; and MOSES's generation metrics over them.

use std::collections::HashSet;

/// The canonical SMILES of `s`, or None when RDKit would not read it (an empty string is
/// not a molecule here, though RDKit reads it as one without atoms).
pub fn canonical(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mol = cosmolkit::Molecule::from_smiles(s).ok()?;
    let text = mol.to_smiles().ok()?;
    String::from_utf8(text.into_bytes()).ok()
}

/// MOSES's figures for generated strings (Polykovskiy et al. 2020): the share that are
/// valid, the share of distinct molecules among the valid ones, and the share of those not
/// in the training set (all compared as canonical SMILES).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct GenerationMetrics {
    pub generated: usize,
    pub valid: usize,
    pub unique: usize,
    pub novel: usize,
}

impl GenerationMetrics {
    pub fn validity(&self) -> f64 {
        self.valid as f64 / self.generated.max(1) as f64
    }

    pub fn uniqueness(&self) -> f64 {
        self.unique as f64 / self.valid.max(1) as f64
    }

    pub fn novelty(&self) -> f64 {
        self.novel as f64 / self.unique.max(1) as f64
    }
}

/// The canonical forms of `training` (those RDKit reads).
pub fn canonical_set<'a>(training: impl IntoIterator<Item = &'a String>) -> HashSet<String> {
    training.into_iter().filter_map(|s| canonical(s)).collect()
}

/// The metrics of `generated` against `training` (canonical forms, see `canonical_set`).
pub fn metrics(generated: &[String], training: &HashSet<String>) -> GenerationMetrics {
    let valid: Vec<String> = generated.iter().filter_map(|s| canonical(s)).collect();
    let unique: HashSet<&String> = valid.iter().collect();
    GenerationMetrics {
        generated: generated.len(),
        valid: valid.len(),
        unique: unique.len(),
        novel: unique
            .iter()
            .filter(|s| !training.contains(s.as_str()))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdkit_decisions() {
        for ok in [
            "CCO",
            "c1ccccc1",
            "c1cc[nH]c1",
            "O=C(O)c1ccccc1Cl",
            "C[C@H](N)C(=O)O",
        ] {
            assert!(canonical(ok).is_some(), "{ok}");
        }
        // Syntax, a pentavalent carbon, an aromatic ring without a Kekulé form, an aromatic
        // atom outside a ring, nothing.
        for bad in ["C(C", "C(C)(C)(C)(C)C", "c1cccc1", "cc", ""] {
            assert!(canonical(bad).is_none(), "{bad}");
        }
        assert_eq!(canonical("OCC"), canonical("CCO"));
        assert_eq!(canonical("C1=CC=CC=C1"), canonical("c1ccccc1"));
    }

    #[test]
    fn moses_metrics() {
        let train = canonical_set(&["CCO".to_string()]);
        let gen: Vec<String> = ["OCC", "CCO", "CCN", "C(C", "c1ccccc1"]
            .map(String::from)
            .to_vec();
        let m = metrics(&gen, &train);
        assert_eq!((m.generated, m.valid, m.unique, m.novel), (5, 4, 3, 2));
    }
}

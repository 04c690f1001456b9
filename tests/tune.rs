//! The kernel tuner end to end: `vae-gpu tune` times every GEMM kernel on the model's
//! shapes, caches the picks, `info` and later runs read them, and a corrupt cache is
//! measured again and rewritten.

mod common;

use common::cli::{command, finish, tmp};

/// `vae-gpu args` with the tuner on and its cache in `cache`: (stdout, stderr).
fn tuned(args: &[&str], cache: &std::path::Path) -> (String, String) {
    let out = finish(
        args,
        command(args)
            .env("VAE_GPU_TUNE", "on")
            .env("VAE_GPU_CACHE_DIR", cache)
            .output()
            .unwrap(),
    );
    assert!(out.status.success(), "vae-gpu {args:?} failed");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// The GEMM rows of `tune`'s table: (shape, pick).
fn picks(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .filter(|l| l.starts_with("gemm "))
        .map(|l| {
            let (shape, rest) = l.split_once("->").unwrap();
            let pick = rest.split_whitespace().next().unwrap();
            (shape.trim().to_string(), pick.to_string())
        })
        .collect()
}

#[test]
fn tune_measures_caches_and_reuses() {
    let cache = tmp().join("tune-cache");
    let (table, notes) = tuned(&["tune", "--batch-size", "64"], &cache);
    // Measuring says so (once), since it takes seconds the user would otherwise wait blind.
    assert_eq!(
        notes.matches("timing kernel variants").count(),
        1,
        "{notes}"
    );
    let first = picks(&table);
    // The default MLP: 11 distinct products in its training and evaluation steps.
    assert_eq!(first.len(), 11, "{first:?}");
    let file = cache.join("kernels.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let devices = json["devices"].as_object().unwrap();
    assert_eq!(devices.len(), 1);
    let table = devices.values().next().unwrap().as_object().unwrap();
    for (shape, pick) in &first {
        let entry = &table[shape.as_str()];
        assert_eq!(entry["pick"].as_str(), Some(pick.as_str()), "{shape}");
        // Every candidate that ran has a time, and the pick is the fastest.
        let micros = entry["micros"].as_object().unwrap();
        let best = micros
            .iter()
            .min_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .unwrap();
        assert_eq!(best.0, pick, "{shape}: {micros:?}");
    }
    // A second run reads the cache: the same picks, nothing measured, and info lists them.
    let (table, notes) = tuned(&["tune", "--batch-size", "64"], &cache);
    assert_eq!(picks(&table), first);
    assert!(!notes.contains("timing kernel variants"), "{notes}");
    let (info, _) = tuned(&["info"], &cache);
    assert!(info.contains("measured choice(s) cached"), "{info}");
    // The next save drops this device's tables from other kernel sources (another build)
    // and keeps other devices'.
    let ours = devices.keys().next().unwrap().clone();
    let stale = ours
        .split(" | ")
        .map(|part| {
            if part.starts_with("kernels ") {
                "kernels 0123456789abcdef"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" | ");
    assert_ne!(stale, ours);
    let mut edited = json.clone();
    let entries = edited["devices"].as_object_mut().unwrap();
    entries.insert(stale.clone(), serde_json::json!({}));
    entries.insert(
        "another GPU | driver | Vulkan".into(),
        serde_json::json!({}),
    );
    std::fs::write(&file, serde_json::to_vec(&edited).unwrap()).unwrap();
    tuned(&["tune", "--batch-size", "32"], &cache);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let kept: Vec<&String> = saved["devices"].as_object().unwrap().keys().collect();
    assert!(kept.contains(&&ours), "{kept:?}");
    assert!(
        kept.contains(&&"another GPU | driver | Vulkan".to_string()),
        "{kept:?}"
    );
    assert!(!kept.contains(&&stale), "{kept:?}");
    // A corrupt cache is ignored, measured again and rewritten whole.
    std::fs::write(&file, b"{ not json").unwrap();
    assert_eq!(
        picks(&tuned(&["tune", "--batch-size", "64"], &cache).0).len(),
        11
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "{text}"
    );
}

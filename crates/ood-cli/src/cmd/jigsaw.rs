//! `ood jigsaw`: TagFog's fake outliers ([`ood_nn::jigsaw`]) as a folder of PNGs.

use crate::args::JigsawArgs;
use anyhow::{Context, Result, bail};
use ood_nn::data::DataSpec;
use rand::SeedableRng;
use serde_json::json;

/// Runs `ood jigsaw`: every image of `--data` (first `--limit`) in its own size, `--per-image`
/// passes, written as `OUT/jigsaw/NNNNNN.png` (1-based, generation order) into a temporary
/// folder that is renamed to OUT at the end (all or nothing); `OUT/jigsaw.config.json` records
/// the settings and the input fingerprint.
pub fn run(a: &JigsawArgs) -> Result<()> {
    if a.grid < 2 {
        bail!("--grid must be at least 2, got {}", a.grid);
    }
    if a.per_image == 0 || a.limit == Some(0) {
        bail!("--per-image and --limit must be at least 1");
    }
    let spec = DataSpec::parse(&a.data)?;
    ood_core::atomic_file::ensure_empty_dir(&a.out)?;
    let mut images = Vec::new();
    for s in spec.samples()?.take(a.limit.unwrap_or(usize::MAX)) {
        images.push(s?.decode()?);
    }
    if images.is_empty() {
        bail!("{}: no images", a.data);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut count = 0usize;
    ood_core::atomic_file::write_dir_atomic(&a.out, |tmp| -> Result<()> {
        let class_dir = tmp.join("jigsaw");
        std::fs::create_dir_all(&class_dir)
            .with_context(|| format!("creating {}", class_dir.display()))?;
        for _pass in 0..a.per_image {
            for img in &images {
                let (w, h) = img.dimensions();
                let out = ood_nn::jigsaw::jigsaw(
                    img.as_raw(),
                    w as usize,
                    h as usize,
                    3,
                    a.grid,
                    &mut rng,
                )?;
                count += 1;
                let p = class_dir.join(format!("{count:06}.png"));
                image::RgbImage::from_raw(w, h, out)
                    .expect("jigsaw keeps the size")
                    .save(&p)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
        let config = json!({
            "command": "jigsaw",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "data_spec": spec.to_spec_string(),
            "data_fingerprint": spec.fingerprint()?,
            "limit": a.limit,
            "grid": a.grid,
            "per_image": a.per_image,
            "seed": a.seed,
            "count": count,
            "layout": "jigsaw/NNNNNN.png, 1-based in generation order: file i comes from source \
                       image (i-1) mod n of pass (i-1) div n; read back with folder:OUT",
        });
        std::fs::write(
            tmp.join("jigsaw.config.json"),
            serde_json::to_string_pretty(&config)? + "\n",
        )
        .with_context(|| format!("writing {}", tmp.display()))?;
        Ok(())
    })?;
    eprintln!("wrote {count} jigsaw images -> {}", a.out.display());
    Ok(())
}

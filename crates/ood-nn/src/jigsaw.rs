//! Jigsaw fake outliers (TagFog, `Jigsaw/create_jigsaw.py`; spec training-methods.md 1.2).
//!
//! One image of `w × h` pixels and grid `p` is cut into `p²` tiles of `⌊w/p⌋ × ⌊h/p⌋` pixels
//! (tile `(i, j)` covers `x ∈ [i·pw, (i+1)·pw)`, `y ∈ [j·ph, (j+1)·ph)`), the list of tiles is
//! shuffled with one uniformly random permutation and pasted back left-to-right, top-to-bottom
//! into a black canvas of the original size. Tiles are never rotated or flipped; a remainder strip
//! (when `w` or `h` is not divisible by `p`) stays black; the identity permutation is not excluded.
//!
//! The reference shuffles with Python's unseeded `random.shuffle`; here the permutation comes from
//! a caller-provided seeded RNG (Fisher–Yates), so a jigsaw set is reproducible. With `m` jigsaws
//! per image, [`jigsaw_set`] makes `m` full passes over the images in order, like the reference:
//! output `i` (0-based) comes from image `i mod n` of pass `⌊i / n⌋`.

use crate::error::{Error, Result};
use rand::Rng;
use rand::seq::SliceRandom;

/// Shuffles the `grid × grid` tiles of one interleaved 8-bit image (`height × width × channels`,
/// row-major) and returns the new image (same shape).
pub fn jigsaw<R: Rng + ?Sized>(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    grid: usize,
    rng: &mut R,
) -> Result<Vec<u8>> {
    if grid == 0 || width < grid || height < grid {
        return Err(Error::Config(format!(
            "jigsaw grid {grid} does not fit a {width}x{height} image"
        )));
    }
    if pixels.len() != width * height * channels {
        return Err(Error::Config(format!(
            "jigsaw input holds {} bytes, expected {width}x{height}x{channels}",
            pixels.len()
        )));
    }
    let (pw, ph) = (width / grid, height / grid);
    // Tiles in the reference's enumeration order: i (x) outer, j (y) inner.
    let mut tiles: Vec<(usize, usize)> = (0..grid)
        .flat_map(|i| (0..grid).map(move |j| (i, j)))
        .collect();
    tiles.shuffle(rng);
    let mut out = vec![0u8; pixels.len()];
    for (slot, &(si, sj)) in tiles.iter().enumerate() {
        // Destination: left-to-right, top-to-bottom.
        let (di, dj) = (slot % grid, slot / grid);
        for y in 0..ph {
            let src = ((sj * ph + y) * width + si * pw) * channels;
            let dst = ((dj * ph + y) * width + di * pw) * channels;
            out[dst..dst + pw * channels].copy_from_slice(&pixels[src..src + pw * channels]);
        }
    }
    Ok(out)
}

/// Makes `per_image` jigsaws of every image of a batch stored as `n × height × width × channels`
/// bytes, in the reference's pass order (all images once, then all images again...). Returns
/// `per_image · n` images in the same layout.
pub fn jigsaw_set<R: Rng + ?Sized>(
    images: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    grid: usize,
    per_image: usize,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let size = width * height * channels;
    if size == 0 || !images.len().is_multiple_of(size) {
        return Err(Error::Config(format!(
            "jigsaw set: {} bytes are not a whole number of {width}x{height}x{channels} images",
            images.len()
        )));
    }
    let mut out = Vec::with_capacity(per_image * images.len());
    for _pass in 0..per_image {
        for img in images.chunks_exact(size) {
            out.extend(jigsaw(img, width, height, channels, grid, rng)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A 6x5 single-channel image whose pixel value names its tile of a 2x2 grid (remainder
    /// column x = 4 and row y = 4 hold 99).
    fn tiled() -> Vec<u8> {
        let (w, h) = (5, 5);
        let mut v = vec![99u8; w * h];
        for y in 0..4 {
            for x in 0..4 {
                v[y * w + x] = ((x / 2) * 10 + (y / 2)) as u8; // tile (i, j) -> 10 i + j
            }
        }
        v
    }

    #[test]
    fn tiles_are_permuted_whole_and_remainder_is_black() {
        let img = tiled();
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let out = jigsaw(&img, 5, 5, 1, 2, &mut rng).unwrap();
            // Remainder strips are black.
            for k in 0..5 {
                assert_eq!(out[4 * 5 + k], 0);
                assert_eq!(out[k * 5 + 4], 0);
            }
            // Each destination tile is constant and holds one whole source tile.
            let mut tiles = Vec::new();
            for dj in 0..2 {
                for di in 0..2 {
                    let v = out[(dj * 2) * 5 + di * 2];
                    for y in 0..2 {
                        for x in 0..2 {
                            assert_eq!(out[(dj * 2 + y) * 5 + di * 2 + x], v);
                        }
                    }
                    tiles.push(v);
                }
            }
            let mut sorted = tiles.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 10, 11]);
            seen.insert(tiles);
        }
        // 4! = 24 permutations; 50 draws see many of them (a constant permutation would fail).
        assert!(
            seen.len() >= 10,
            "only {} distinct permutations",
            seen.len()
        );
    }

    #[test]
    fn seeded_and_in_pass_order() {
        let imgs: Vec<u8> = (0..2 * 4 * 4 * 3).map(|v| v as u8).collect();
        let a = jigsaw_set(&imgs, 4, 4, 3, 4, 2, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let b = jigsaw_set(&imgs, 4, 4, 3, 4, 2, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2 * imgs.len());
        // Output k comes from image k mod 2: same multiset of pixels.
        let size = 48;
        for k in 0..4 {
            let mut got = a[k * size..(k + 1) * size].to_vec();
            let mut want = imgs[(k % 2) * size..(k % 2 + 1) * size].to_vec();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
        assert!(jigsaw(&imgs[..48], 4, 4, 3, 5, &mut ChaCha8Rng::seed_from_u64(1)).is_err());
        assert!(jigsaw(&imgs[..47], 4, 4, 3, 2, &mut ChaCha8Rng::seed_from_u64(1)).is_err());
    }
}

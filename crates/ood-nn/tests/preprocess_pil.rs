//! The PIL-style bilinear resize equals Pillow's `Image.resize(size, Image.BILINEAR)` pixel for
//! pixel (fixtures from tests/fixtures/gen_pil_resize.py, Pillow 13.0).

use ood_nn::data::npy::{NpyData, read_npy};
use ood_nn::data::preprocess::resize_bilinear_pil;

fn load(path: &str) -> image::RgbImage {
    let a = read_npy(path).unwrap();
    let NpyData::U8(v) = a.data else {
        panic!("u8 fixture expected")
    };
    image::RgbImage::from_raw(a.shape[1] as u32, a.shape[0] as u32, v).unwrap()
}

#[test]
fn resize_matches_pillow_exactly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for i in 0..4 {
        let input = load(&format!("{dir}/pil_resize_{i}_in.npy"));
        let want = load(&format!("{dir}/pil_resize_{i}_out.npy"));
        let got = resize_bilinear_pil(&input, want.width(), want.height());
        let diff = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff,
            0,
            "case {i}: {diff} of {} bytes differ",
            want.as_raw().len()
        );
    }
}

//! libtorch is linked and runs: a 2x2 matrix product on the CPU.

#[test]
fn torch_matmul_on_cpu() {
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = a.matmul(&a);
    let v: Vec<f32> = Vec::<f32>::try_from(b.flatten(0, -1)).unwrap();
    assert_eq!(v, vec![7.0, 10.0, 15.0, 22.0]);
}

//! NumPy arrays in, `ood-core` types out.
//!
//! The Python side hands over float32 or float64 arrays of the right rank; these enums borrow
//! them (no copy) and the converters read them in logical row-major order whatever their
//! strides, so C-, Fortran-ordered and sliced arrays all mean what NumPy says they mean.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use std::borrow::Cow;

/// A borrowed 2-D float32 or float64 NumPy array.
#[derive(FromPyObject)]
pub enum Mat<'py> {
    /// float32.
    F32(PyReadonlyArray2<'py, f32>),
    /// float64.
    F64(PyReadonlyArray2<'py, f64>),
}

/// A view of a [`Mat`] that can cross into a GIL-free closure.
#[derive(Clone)]
pub enum MatView<'a> {
    /// float32.
    F32(ArrayView2<'a, f32>),
    /// float64.
    F64(ArrayView2<'a, f64>),
}

impl Mat<'_> {
    /// The array as an ndarray view (strides preserved).
    pub fn view(&self) -> MatView<'_> {
        match self {
            Mat::F32(a) => MatView::F32(a.as_array()),
            Mat::F64(a) => MatView::F64(a.as_array()),
        }
    }
}

impl MatView<'_> {
    /// `(rows, columns)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            MatView::F32(a) => a.dim(),
            MatView::F64(a) => a.dim(),
        }
    }
}

/// An owned row-major float32 copy (float64 is rounded to nearest).
pub fn owned_f32(v: &MatView<'_>) -> Array2<f32> {
    let dim = v.dim();
    let data: Vec<f32> = match v {
        MatView::F32(a) => match a.as_slice() {
            Some(s) => s.to_vec(),
            None => a.iter().copied().collect(),
        },
        MatView::F64(a) => match a.as_slice() {
            Some(s) => s.iter().map(|&x| x as f32).collect(),
            None => a.iter().map(|&x| x as f32).collect(),
        },
    };
    Array2::from_shape_vec(dim, data).expect("rows * cols values")
}

/// A borrowed 1-D float32 or float64 NumPy array.
#[derive(FromPyObject)]
pub enum Vec1<'py> {
    /// float32.
    F32(PyReadonlyArray1<'py, f32>),
    /// float64.
    F64(PyReadonlyArray1<'py, f64>),
}

/// A view of a [`Vec1`].
#[derive(Clone)]
pub enum VecView<'a> {
    /// float32.
    F32(ArrayView1<'a, f32>),
    /// float64.
    F64(ArrayView1<'a, f64>),
}

impl Vec1<'_> {
    /// The array as an ndarray view (strides preserved).
    pub fn view(&self) -> VecView<'_> {
        match self {
            Vec1::F32(a) => VecView::F32(a.as_array()),
            Vec1::F64(a) => VecView::F64(a.as_array()),
        }
    }
}

impl<'a> VecView<'a> {
    /// The float32 view, if the array is float32.
    pub fn as_f32(&self) -> Option<ArrayView1<'a, f32>> {
        match self {
            VecView::F32(a) => Some(*a),
            VecView::F64(_) => None,
        }
    }
}

/// The values as float64: borrowed when the array is contiguous float64, else copied (float32
/// widens exactly).
pub fn scores_f64<'a>(v: &VecView<'a>) -> Cow<'a, [f64]> {
    match v {
        VecView::F64(a) => match a.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        },
        VecView::F32(a) => Cow::Owned(a.iter().map(|&x| x as f64).collect()),
    }
}

/// An owned float32 copy.
pub fn vec_f32(v: &VecView<'_>) -> Array1<f32> {
    match v {
        VecView::F32(a) => a.to_owned(),
        VecView::F64(a) => a.mapv(|x| x as f32),
    }
}

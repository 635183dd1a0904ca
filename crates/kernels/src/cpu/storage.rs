//! [`CpuStorage`]: a buffer in host memory, one variant per dtype; the CPU's sibling of
//! `cuda::storage::GpuStorage`, both behind [`crate::Storage`]. Its conversions between dtypes
//! are the half rule's widening and narrowing on the CPU (docs/architecture.md).

use crate::storage::DType;

/// A host buffer of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

impl CpuStorage {
    pub(crate) fn as_bf16(&self) -> Option<&[half::bf16]> {
        match self {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn as_f16(&self) -> Option<&[half::f16]> {
        match self {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }

    /// The values widened to f32 (exact from bf16 and f16; rounded from f64).
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        use half::slice::HalfFloatSliceExt;
        match self {
            CpuStorage::F32(v) => v.clone(),
            CpuStorage::F64(v) => v.iter().map(|&x| x as f32).collect(),
            CpuStorage::BF16(v) => crate::cpu::convert::f32_from_bf16(v),
            CpuStorage::F16(v) => v.to_f32_vec(),
        }
    }

    /// The values widened to f64 (exact from every other dtype).
    pub(crate) fn to_f64(&self) -> Vec<f64> {
        use half::slice::HalfFloatSliceExt;
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::BF16(v) => v.to_f64_vec(),
            CpuStorage::F16(v) => v.to_f64_vec(),
        }
    }

    /// These values in `dtype`, each rounded once to nearest-even where `dtype` is narrower.
    /// f64 to a 16-bit float goes through f32 (rounded twice, as PyTorch's conversion does).
    pub(crate) fn cast(&self, dtype: DType) -> CpuStorage {
        use half::vec::HalfFloatVecExt;
        match dtype {
            DType::F32 => CpuStorage::F32(self.to_f32()),
            DType::F64 => CpuStorage::F64(self.to_f64()),
            DType::BF16 => match self {
                CpuStorage::BF16(v) => CpuStorage::BF16(v.clone()),
                CpuStorage::F32(v) => CpuStorage::BF16(crate::cpu::convert::bf16_from_f32(v)),
                other => CpuStorage::BF16(crate::cpu::convert::bf16_from_f32(&other.to_f32())),
            },
            DType::F16 => match self {
                CpuStorage::F16(v) => CpuStorage::F16(v.clone()),
                CpuStorage::F32(v) => CpuStorage::F16(Vec::from_f32_slice(v)),
                other => CpuStorage::F16(Vec::from_f32_slice(&other.to_f32())),
            },
        }
    }
}

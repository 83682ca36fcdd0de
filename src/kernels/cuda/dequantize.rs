//! Dequantization on a CUDA device, for every [`QuantFormat`]: the packed codes are uploaded
//! once and decoded on the device, one thread per eight codes (`dequantize.cu`).
//!
//! The per-group parameters are the very vectors the CPU decoder uses (f32 scales, integer zero
//! points, affine offsets, unit-level tables), so both backends evaluate the same expression on
//! the same inputs.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor,
};

use super::cuda_storage;
use super::launch_1d;
use super::weight::CudaQuantizedWeight;
use crate::error::{Error, Result};
use crate::kernels::Domain;
use crate::quant::{QuantFormat, QuantizedTensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/dequantize.ptx"));
/// Name under which Candle caches the loaded module per device.
const MODULE: &str = "quantlens_dequantize";
const BLOCK: u32 = 256;
/// Codes per 32-bit word of packed 4-bit codes: the unit of the fast 4-bit decode.
const WORD: usize = 8;
/// Words per thread of the fast 4-bit decode (`U4_WORDS_PER_LANE` in `dequantize.cu`).
const WORDS_PER_THREAD: u32 = 4;
/// Enough blocks to fill any current GPU; the kernel strides over the rest.
const MAX_BLOCKS: usize = 1 << 16;

/// How a code becomes a value; must match the `MODE_*` constants in `dequantize.cu`.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Mode {
    Uniform = 0,
    Affine = 1,
    Table = 2,
}

/// Kernel parameters, passed by value; layout mirrors `struct Params` in `dequantize.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Params {
    n: u64,
    bits: u32,
    group_len: u32,
    mode: u32,
    table_len: u32,
    groups_per_table: u32,
    /// Columns of the input scales, 0 when there are none.
    cols: u32,
}

// SAFETY: `Params` is `repr(C)`, `Copy`, and holds only plain integers, matching the C struct.
unsafe impl DeviceRepr for Params {}

/// The decode of one tensor, applied to its packed codes (a u8 tensor on the device).
struct DecodeOp {
    params: Params,
    scales: Vec<f32>,
    zeros: Vec<i32>,
    /// Affine offsets per group, or the unit-level tables, or one unused element.
    aux: Vec<f32>,
    /// Input scales per column, or one unused element.
    in_scales: Vec<f32>,
    shape: Vec<usize>,
    dtype: DType,
    /// Uniform 4-bit whose groups are whole 8-code words and no input scales to apply: the
    /// fast kernel `ql_dequantize_u4_*` applies (zero points then as u8, `None` if symmetric).
    fast_u4: Option<Option<Vec<u8>>>,
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InconsistentParts(format!("{what} {v} exceeds u32")))
}

impl DecodeOp {
    fn new(q: &QuantizedTensor, dtype: DType, domain: Domain) -> Result<Self> {
        let groups = q.num_groups();
        // (mode, zero points, aux, table length, groups per table)
        let unit_table = |t: Vec<f32>| (Mode::Table, vec![0], t.len(), t, groups);
        let (mode, zeros, table_len, aux, groups_per_table) = match q.format() {
            QuantFormat::Uniform { .. } => {
                let zeros = match q.zeros() {
                    Some(z) => z.unpack().into_iter().map(i32::from).collect(),
                    None => vec![q.zero_point(0).unwrap_or(0); groups],
                };
                (Mode::Uniform, zeros, 1, vec![0.0], 1)
            }
            QuantFormat::Affine { .. } => {
                let offsets = q
                    .offsets()
                    .ok_or_else(|| {
                        Error::InconsistentParts("affine tensor without offsets".into())
                    })?
                    .to_f32_vec();
                (Mode::Affine, vec![0], 1, offsets, 1)
            }
            QuantFormat::Sign => unit_table(vec![-1.0, 1.0]),
            // Code 3 is rejected by `QuantizedTensor::assemble`.
            QuantFormat::Ternary => unit_table(vec![-1.0, 0.0, 1.0, 0.0]),
            QuantFormat::Float(f) => unit_table(f.value_table()),
            QuantFormat::Codebook { .. } => {
                let cb = q.codebook().ok_or_else(|| {
                    Error::InconsistentParts("codebook tensor without a codebook".into())
                })?;
                (
                    Mode::Table,
                    vec![0],
                    cb.table_len(),
                    cb.levels().to_vec(),
                    groups / cb.tables(),
                )
            }
        };
        let (in_scales, cols) = match (domain, q.input_scales()) {
            (Domain::Effective, Some(s)) => (s.to_f32_vec(), s.len()),
            _ => (vec![0f32], 0),
        };
        let fast_u4 = match q.format() {
            QuantFormat::Uniform { bits: 4, symmetric }
                if cols == 0
                    && q.group_len().is_multiple_of(WORD)
                    && q.numel().is_multiple_of(WORD)
                    && q.numel() / WORD <= u32::MAX as usize =>
            {
                Some(match (symmetric, q.zeros()) {
                    (false, Some(z)) => Some(z.unpack()),
                    _ => None,
                })
            }
            _ => None,
        };
        Ok(DecodeOp {
            fast_u4,
            params: Params {
                n: q.numel() as u64,
                bits: u32::from(q.format().code_bits()),
                group_len: u32_of(q.group_len(), "group length")?,
                mode: mode as u32,
                table_len: u32_of(table_len, "table length")?,
                groups_per_table: u32_of(groups_per_table, "groups per table")?,
                cols: u32_of(cols, "input-scale columns")?,
            },
            scales: q.scales().to_f32_vec(),
            zeros,
            aux,
            in_scales,
            shape: q.shape().to_vec(),
            dtype,
        })
    }

    fn launch<T>(
        &self,
        kernel: &str,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<CudaStorage>
    where
        T: CudaDType + DeviceRepr + candle_core::WithDType,
    {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("packed codes must be contiguous".into()))?;
        let dev = &storage.device;
        let codes = storage.as_cuda_slice::<u8>()?.slice(start..end);
        if let Some(zeros) = &self.fast_u4 {
            let scales = dev.clone_htod(&self.scales)?;
            let zeros = zeros.as_ref().map(|z| dev.clone_htod(z)).transpose()?;
            let zero = self.zeros.first().copied().unwrap_or(8);
            let out = launch_u4::<T>(
                dev,
                &codes,
                &scales.as_view(),
                zeros.as_ref().map(|z| z.as_view()).as_ref(),
                zero,
                self.params.n as usize,
                self.params.group_len as usize,
            )?;
            return Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()));
        }
        let scales = dev.clone_htod(&self.scales)?;
        let zeros = dev.clone_htod(&self.zeros)?;
        let aux = dev.clone_htod(&self.aux)?;
        let in_scales = dev.clone_htod(&self.in_scales)?;
        let n = self.params.n as usize;
        // SAFETY: the kernel writes every one of the `n` elements before anyone reads them.
        let mut out = unsafe { dev.alloc::<T>(n) }?;
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        // One thread per octet of eight codes.
        let blocks = n.div_ceil(8).div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
        let cfg = launch_1d(blocks, BLOCK);
        let mut b = func.builder();
        b.arg(&codes)
            .arg(&scales)
            .arg(&zeros)
            .arg(&aux)
            .arg(&in_scales)
            .arg(&self.params)
            .arg(&mut out);
        // SAFETY: argument types and order match the kernel signature in `dequantize.cu`;
        // every index the kernel reads is within the buffers checked by `QuantizedTensor`.
        unsafe { b.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp1 for DecodeOp {
    fn name(&self) -> &'static str {
        "quantlens-dequantize"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // Never reached: `dequantize` applies this op only to codes on a CUDA device.
        candle_core::bail!("quantlens-dequantize runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match self.dtype {
            DType::F32 => self.launch::<f32>("ql_dequantize_f32", storage, layout)?,
            DType::F16 => self.launch::<half::f16>("ql_dequantize_f16", storage, layout)?,
            DType::BF16 => self.launch::<half::bf16>("ql_dequantize_bf16", storage, layout)?,
            other => candle_core::bail!("quantlens-dequantize: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from(self.shape.clone())))
    }
}

/// Decode `q` into a `dtype` (f32, f16 or bf16, checked by the caller) tensor on the CUDA
/// device `device`.
pub(crate) fn dequantize(
    q: &QuantizedTensor,
    device: &Device,
    dtype: DType,
    domain: Domain,
) -> Result<Tensor> {
    let op = DecodeOp::new(q, dtype, domain)?;
    let bytes = q.codes().bytes();
    let codes = Tensor::from_slice(bytes, bytes.len(), device)?;
    Ok(codes.apply_op1_no_bwd(&op)?)
}

/// Kernel name of the fast 4-bit decode for `dtype`.
fn u4_kernel(dtype: DType) -> candle_core::Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "ql_dequantize_u4_f32",
        DType::F16 => "ql_dequantize_u4_f16",
        DType::BF16 => "ql_dequantize_u4_bf16",
        other => candle_core::bail!("quantlens-dequantize: unsupported dtype {other:?}"),
    })
}

/// Launch the fast 4-bit decode of `n` codes (a multiple of 8, groups of `group_len`, a
/// multiple of 8): each thread decodes four 32-bit words of 8 codes. `zeros`: one u8 zero
/// point per group, or `None` for the symmetric `zero`.
fn launch_u4<T: CudaDType + DeviceRepr + candle_core::WithDType>(
    dev: &CudaDevice,
    codes: &CudaView<'_, u8>,
    scales: &CudaView<'_, f32>,
    zeros: Option<&CudaView<'_, u8>>,
    zero: i32,
    n: usize,
    group_len: usize,
) -> candle_core::Result<CudaSlice<T>> {
    let words = (n / WORD) as u32;
    let words_per_group = (group_len / WORD) as u32;
    // SAFETY: the kernel writes all n = 8·words elements.
    let mut out = unsafe { dev.alloc::<T>(n) }?;
    let func = dev.get_or_load_custom_func(u4_kernel(T::DTYPE)?, MODULE, PTX)?;
    let cfg = launch_1d(words.div_ceil(BLOCK * WORDS_PER_THREAD).max(1), BLOCK);
    let null = 0u64;
    let mut b = func.builder();
    b.arg(codes).arg(scales);
    match zeros {
        Some(z) => b.arg(z),
        None => b.arg(&null),
    };
    b.arg(&zero).arg(&words).arg(&words_per_group).arg(&mut out);
    // SAFETY: argument types and order match `DEQUANT_U4_KERNEL` in `dequantize.cu`; codes
    // hold n/2 bytes, scales and zeros one entry per group (checked by the callers).
    unsafe { b.launch(cfg) }.w()?;
    Ok(out)
}

/// Decode of a [`CudaQuantizedWeight`], applied to its codes tensor.
struct ResidentDecode<'a> {
    w: &'a CudaQuantizedWeight,
    dtype: DType,
}

impl ResidentDecode<'_> {
    fn launch<T: CudaDType + DeviceRepr + candle_core::WithDType>(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("packed codes must be contiguous".into()))?;
        let dev = &storage.device;
        let codes = storage.as_cuda_slice::<u8>()?.slice(start..end);
        let (sg, _) = self.w.scales.storage_and_layout();
        let scales = cuda_storage(&sg)?.as_cuda_slice::<f32>()?.as_view();
        let zg = self.w.zeros.as_ref().map(|z| z.storage_and_layout().0);
        let zeros = match &zg {
            Some(g) => Some(cuda_storage(g)?.as_cuda_slice::<u8>()?.as_view()),
            None => None,
        };
        let out = launch_u4::<T>(
            dev,
            &codes,
            &scales,
            zeros.as_ref(),
            self.w.zero,
            self.w.rows * self.w.cols,
            self.w.group_len,
        )?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp1 for ResidentDecode<'_> {
    fn name(&self) -> &'static str {
        "quantlens-dequantize-resident"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("quantlens-dequantize-resident runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match self.dtype {
            DType::F32 => self.launch::<f32>(storage, layout)?,
            DType::F16 => self.launch::<half::f16>(storage, layout)?,
            DType::BF16 => self.launch::<half::bf16>(storage, layout)?,
            other => candle_core::bail!("quantlens-dequantize: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from((self.w.rows, self.w.cols))))
    }
}

/// [`CudaQuantizedWeight::dequantize`]: the fast 4-bit decode, reading the resident codes.
pub(crate) fn dequantize_resident(w: &CudaQuantizedWeight, dtype: DType) -> Result<Tensor> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            what: "dequantized tensor",
            dtype,
        });
    }
    Ok(w.codes.apply_op1_no_bwd(&ResidentDecode { w, dtype })?)
}

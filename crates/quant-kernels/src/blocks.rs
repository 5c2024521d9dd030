//! The GGUF block layouts this crate reads, and their scalar dequantization (the reference the
//! dot products are tested against, and the row lookup of quantized embedding tables).
//!
//! Byte layouts, per block (as llama.cpp's `ggml-common.h` defines them):
//!
//! | type | weights | bytes | layout |
//! |---|---:|---:|---|
//! | Q8_0 | 32 | 34 | `d: f16`, `qs: [i8; 32]` |
//! | Q4_K | 256 | 144 | `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qs: [u8; 128]` |
//! | Q5_K | 256 | 176 | `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]`, `qs: [u8; 128]` |
//! | Q6_K | 256 | 210 | `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16` |

/// Elements of a k-quant superblock (and of an activation block).
pub const QK_K: usize = 256;

/// A block type these kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 8-bit, blocks of 32 with one f16 scale.
    Q8_0,
    /// 4-bit k-quant: 8 sub-blocks of 32 with 6-bit scales and minimums.
    Q4K,
    /// 5-bit k-quant: Q4_K plus one high bit per weight.
    Q5K,
    /// 6-bit k-quant: 16 sub-blocks of 16 with 8-bit scales.
    Q6K,
}

impl QuantType {
    /// The type of a GGML type id (the numbers in GGUF tensor infos), if covered.
    pub fn from_ggml(type_id: u32) -> Option<Self> {
        match type_id {
            8 => Some(QuantType::Q8_0),
            12 => Some(QuantType::Q4K),
            13 => Some(QuantType::Q5K),
            14 => Some(QuantType::Q6K),
            _ => None,
        }
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::Q8_0 => 32,
            _ => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 => 34,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
        }
    }

    /// Bytes of a row of `cols` weights.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }
}

/// The little-endian f16 at `b[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The exact f16 → f32 conversion, written out because it runs once per block inside the dot
/// products: `half` asks the CPU for F16C on every call (a check and an outlined call), which
/// took a quarter of a Q4_K dot product here. Tested equal to `half` on all 65,536 values.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    if exp == 0 {
        // Zero or subnormal: man · 2^-24, exact in f32.
        return f32::from_bits((man as f32 * (1.0 / 16_777_216.0)).to_bits() | sign);
    }
    if exp == 31 {
        // Infinity or NaN (payload kept).
        return f32::from_bits(sign | 0x7F80_0000 | (man << 13));
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (man << 13))
}

/// The eight 6-bit scales and eight 6-bit minimums packed in a Q4_K/Q5_K block's 12 bytes.
#[inline(always)]
pub(crate) fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
            mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, mn)
}

/// The blocks of one row expanded into `out`.
pub fn dequantize(dtype: QuantType, row: &[u8], out: &mut [f32]) {
    let n = dtype.block_elems();
    for (b, y) in row
        .chunks_exact(dtype.block_bytes())
        .zip(out.chunks_exact_mut(n))
    {
        match dtype {
            QuantType::Q8_0 => {
                let d = f16_at(b, 0);
                for (v, &q) in y.iter_mut().zip(&b[2..34]) {
                    *v = d * (q as i8) as f32;
                }
            }
            QuantType::Q4K | QuantType::Q5K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (sc, mn) = scales_mins(&b[4..16]);
                let (qh, qs) = if dtype == QuantType::Q5K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for j in 0..4 {
                    let (d1, m1) = (d * sc[2 * j] as f32, dmin * mn[2 * j] as f32);
                    let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * mn[2 * j + 1] as f32);
                    for l in 0..32 {
                        let q = qs[32 * j + l];
                        let (h1, h2) = match qh {
                            Some(h) => (
                                ((h[l] >> (2 * j)) & 1) << 4,
                                ((h[l] >> (2 * j + 1)) & 1) << 4,
                            ),
                            None => (0, 0),
                        };
                        y[64 * j + l] = d1 * ((q & 0xF) | h1) as f32 - m1;
                        y[64 * j + 32 + l] = d2 * ((q >> 4) | h2) as f32 - m2;
                    }
                }
            }
            QuantType::Q6K => {
                let d = f16_at(b, 208);
                for h in 0..2 {
                    let ql = &b[64 * h..64 * h + 64];
                    let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                    let sc = &b[192 + 8 * h..192 + 8 * h + 8];
                    let y = &mut y[128 * h..128 * h + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |i: usize| d * (sc[i] as i8) as f32;
                        y[l] = s(is) * q1 as f32;
                        y[l + 32] = s(is + 2) * q2 as f32;
                        y[l + 64] = s(is + 4) * q3 as f32;
                        y[l + 96] = s(is + 6) * q4 as f32;
                    }
                }
            }
        }
    }
}

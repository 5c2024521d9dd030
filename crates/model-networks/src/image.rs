//! CLIP image preprocessing, as Transformers' `CLIPImageProcessor` does it: resize so the
//! shortest edge is `size` (bicubic), center-crop to `crop`, scale to [0, 1], normalize with
//! CLIP's mean and std, channels first.

use candle_core::{DType, Device, Tensor};
use image::DynamicImage;
use image::imageops::FilterType;
use serde_json::Value;

use model_runtime::{BackendError, ModelDir};

/// CLIP's normalization mean (OpenAI's training set statistics).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalization std.
pub const CLIP_STD: [f32; 3] = [0.268_629_5, 0.261_302_6, 0.275_777_1];

/// Resize, crop and normalization settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    /// Target of the shortest edge.
    pub shortest_edge: u32,
    /// Center-crop height and width.
    pub crop: (u32, u32),
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
}

impl Default for ClipPreprocess {
    /// ViT-B/32: 224 shortest edge, 224×224 crop, CLIP mean/std.
    fn default() -> Self {
        ClipPreprocess {
            shortest_edge: 224,
            crop: (224, 224),
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }
}

impl ClipPreprocess {
    /// Reads `preprocessor_config.json` (both the old `size: 224` and the newer
    /// `size: {"shortest_edge": 224}` spellings); defaults for `image_size` when absent.
    pub fn read(dir: &ModelDir, image_size: usize) -> Result<Self, BackendError> {
        let side = image_size as u32;
        let mut p = ClipPreprocess {
            shortest_edge: side,
            crop: (side, side),
            ..Default::default()
        };
        let Some(v) = dir.optional_json::<Value>("preprocessor_config.json")? else {
            return Ok(p);
        };
        let path = dir.root().join("preprocessor_config.json");
        let bad = |field: &str| {
            BackendError::config(
                &path,
                format!("`{field}` is not a size or a list of three numbers"),
            )
        };
        match v.get("size") {
            None => {}
            Some(Value::Number(n)) => {
                p.shortest_edge = n.as_u64().ok_or_else(|| bad("size"))? as u32
            }
            Some(obj) => {
                if let Some(n) = obj.get("shortest_edge").and_then(Value::as_u64) {
                    p.shortest_edge = n as u32;
                } else {
                    return Err(bad("size"));
                }
            }
        }
        match v.get("crop_size") {
            None => {}
            Some(Value::Number(n)) => {
                let n = n.as_u64().ok_or_else(|| bad("crop_size"))? as u32;
                p.crop = (n, n);
            }
            Some(obj) => {
                let h = obj
                    .get("height")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("crop_size"))?;
                let w = obj
                    .get("width")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("crop_size"))?;
                p.crop = (h as u32, w as u32);
            }
        }
        let triple = |field: &str| -> Result<Option<[f32; 3]>, BackendError> {
            match v.get(field) {
                None => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| bad(field))? as f32;
                    }
                    Ok(Some(out))
                }
                Some(_) => Err(bad(field)),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            p.std = s;
        }
        Ok(p)
    }

    /// One image as normalized CHW f32 values.
    pub fn pixels(&self, image: &DynamicImage) -> Vec<f32> {
        let (w, h) = (image.width().max(1), image.height().max(1));
        // Transformers: the short side becomes `shortest_edge`, the long side
        // `int(shortest_edge × long / short)` (truncated).
        let s = self.shortest_edge as u64;
        let (nw, nh) = if w <= h {
            (s as u32, ((s * h as u64) / w as u64).max(1) as u32)
        } else {
            (((s * w as u64) / h as u64).max(1) as u32, s as u32)
        };
        let resized = image.resize_exact(nw, nh, FilterType::CatmullRom).to_rgb8();
        let (ch, cw) = self.crop;
        // Center crop; an image smaller than the crop (impossible after the resize unless the
        // crop is larger than the shortest edge) is padded with zeros, as Transformers does.
        let top = (nh as i64 - ch as i64) / 2;
        let left = (nw as i64 - cw as i64) / 2;
        let plane = (ch * cw) as usize;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..ch as i64 {
            for x in 0..cw as i64 {
                let (sy, sx) = (y + top, x + left);
                let rgb = if sy >= 0 && sx >= 0 && sy < nh as i64 && sx < nw as i64 {
                    resized.get_pixel(sx as u32, sy as u32).0
                } else {
                    [0, 0, 0]
                };
                let i = (y * cw as i64 + x) as usize;
                for c in 0..3 {
                    out[c * plane + i] = (rgb[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
                }
            }
        }
        out
    }

    /// A batch `[n, 3, crop_h, crop_w]` on `device` in `dtype`.
    pub fn tensor(
        &self,
        images: &[DynamicImage],
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        let mut data = Vec::with_capacity(images.len() * 3 * (self.crop.0 * self.crop.1) as usize);
        for image in images {
            data.extend(self.pixels(image));
        }
        Tensor::from_vec(
            data,
            (images.len(), 3, self.crop.0 as usize, self.crop.1 as usize),
            device,
        )?
        .to_dtype(dtype)
    }
}

/// Decodes an encoded image (PNG or JPEG).
pub fn decode(bytes: &[u8], index: usize) -> Result<DynamicImage, BackendError> {
    image::load_from_memory(bytes).map_err(|e| BackendError::Image {
        index,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    #[test]
    fn shortest_edge_resize_then_center_crop() {
        // 448×224: resized to 448×224 → 448×224 stays (short edge 224), crop takes the middle.
        let mut img = RgbImage::new(448, 224);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if (112..336).contains(&x) {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            };
        }
        let p = ClipPreprocess::default();
        let px = p.pixels(&DynamicImage::ImageRgb8(img));
        assert_eq!(px.len(), 3 * 224 * 224);
        // Every cropped pixel is white: the black side bands were cut away.
        let white = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0];
        assert!(px[..224 * 224].iter().all(|v| (v - white).abs() < 1e-4));
    }

    #[test]
    fn small_images_are_upscaled_to_the_crop() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 20, Rgb([0, 0, 0])));
        let t = ClipPreprocess::default()
            .tensor(&[img.clone(), img], &Device::Cpu, DType::F32)
            .unwrap();
        assert_eq!(t.dims(), &[2, 3, 224, 224]);
        let black = -CLIP_MEAN[2] / CLIP_STD[2];
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!((v[2 * 224 * 224 + 5] - black).abs() < 1e-4);
    }
}

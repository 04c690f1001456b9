//! What the library's calls accept as images: flat `f32` values, `image` buffers, or an
//! [`Images`] set.

use image::DynamicImage;

use super::{Error, Result};
use crate::data::Images;
use crate::vae::ModelConfig;

impl Images {
    /// Images from flat values in [0, 1], `height * width * channels` per image, row by row
    /// with the channels of a pixel together (as [`image::RgbImage`] lays them out).
    ///
    /// The GPU holds images as 8-bit pixels, as it holds the training data, so each value
    /// is rounded to the nearest 1/255.
    ///
    /// ```
    /// let two = vae_gpu::Images::from_f32(&[0.0, 0.5, 1.0, 0.25, 0.0, 1.0, 1.0, 0.5], 2, 2, 1)?;
    /// assert_eq!((two.count, two.pixels[1]), (2, 128));
    /// # Ok::<(), vae_gpu::Error>(())
    /// ```
    pub fn from_f32(
        values: &[f32],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Images> {
        let dim = height * width * channels;
        if dim == 0 || !values.len().is_multiple_of(dim) {
            return Err(Error::Input(format!(
                "{} values are not a whole number of {height}x{width}x{channels} images",
                values.len()
            )));
        }
        if let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::Input(format!(
                "value {i} is {}; image values must lie in [0, 1]",
                values[i]
            )));
        }
        Ok(Images {
            pixels: crate::vae::decode::to_u8(values),
            count: values.len() / dim,
            height,
            width,
            channels,
            labels: None,
            dtype: crate::data::Dtype::U8,
        })
    }

    /// Images from decoded image buffers, each resized to `width` x `height` and converted
    /// to `channels` (1: grayscale, 3: RGB).
    pub fn from_dynamic(
        images: &[DynamicImage],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Images> {
        if height == 0 || width == 0 || !matches!(channels, 1 | 3) {
            return Err(Error::Input(format!(
                "images of {height}x{width}x{channels}: sizes must be positive and channels 1 or 3"
            )));
        }
        let mut pixels = Vec::with_capacity(images.len() * height * width * channels);
        for img in images {
            let img = img.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            );
            match channels {
                3 => pixels.extend_from_slice(img.to_rgb8().as_raw()),
                _ => pixels.extend_from_slice(img.to_luma8().as_raw()),
            }
        }
        Ok(Images {
            pixels,
            count: images.len(),
            height,
            width,
            channels,
            labels: None,
            dtype: crate::data::Dtype::U8,
        })
    }

    /// Checks that the fields agree (they are public, so a caller can build any): pixels
    /// for `count` images of the stated size, channels 1 or 3, a label per image.
    pub fn check(&self) -> Result<()> {
        let want = self.count.checked_mul(self.image_bytes());
        if self.dim() == 0 || want != Some(self.pixels.len()) {
            return Err(Error::Input(format!(
                "Images: {} pixel bytes for {} images of {}x{}x{}",
                self.pixels.len(),
                self.count,
                self.height,
                self.width,
                self.channels
            )));
        }
        if !matches!(self.channels, 1 | 3) {
            return Err(Error::Input(format!(
                "Images: {} channels; 1 or 3 are supported",
                self.channels
            )));
        }
        if let Some(labels) = &self.labels {
            if labels.len() != self.count {
                return Err(Error::Input(format!(
                    "Images: {} labels for {} images",
                    labels.len(),
                    self.count
                )));
            }
        }
        Ok(())
    }

    /// The values of every image, flat: pixels / 255 for u8 images, f32 data as stored.
    pub fn to_f32(&self) -> Vec<f32> {
        self.dtype.values(&self.pixels)
    }
}

/// Images a model takes: flat `f32` values in [0, 1] at the model's size (`[f32]`,
/// `Vec<f32>`), `image` buffers (resized to it), or an [`Images`] set of its size.
pub trait Input {
    /// The images as the model's pixels; an error if they do not fit its size.
    fn to_images(&self, model: &ModelConfig) -> Result<Images>;
}

impl Input for [f32] {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        Images::from_f32(self, c.height, c.width, c.channels)
    }
}

impl Input for Vec<f32> {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        self.as_slice().to_images(c)
    }
}

impl Input for Images {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        self.check()?;
        if (self.height, self.width, self.channels) != (c.height, c.width, c.channels) {
            return Err(Error::Input(format!(
                "the model takes {}x{}x{} images, these are {}x{}x{}",
                c.height, c.width, c.channels, self.height, self.width, self.channels
            )));
        }
        Ok(self.clone())
    }
}

impl Input for [DynamicImage] {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        Images::from_dynamic(self, c.height, c.width, c.channels)
    }
}

impl Input for Vec<DynamicImage> {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        self.as_slice().to_images(c)
    }
}

impl Input for DynamicImage {
    fn to_images(&self, c: &ModelConfig) -> Result<Images> {
        std::slice::from_ref(self).to_images(c)
    }
}

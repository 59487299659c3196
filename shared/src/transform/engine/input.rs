//! Opening the source file: gzip by extension or magic bytes, with progress reported as the
//! compressed bytes are read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::transform::TransformError;

/// Progress callback: bytes of the source read so far (increments).
pub(crate) type ProgressFn<'p> = &'p (dyn Fn(u64) + Sync);

/// Opens the input: gzip by extension or magic bytes.
pub(crate) fn open_input<'p>(
    path: &Path,
    key: &str,
    progress: Option<ProgressFn<'p>>,
) -> Result<Box<dyn Read + 'p>, TransformError> {
    let io = |e: std::io::Error| TransformError::Io {
        key: key.to_string(),
        source: e,
    };
    let f = File::open(path).map_err(io)?;
    let counted = Counting {
        inner: f,
        progress,
        n: 0,
    };
    let mut br = BufReader::with_capacity(1 << 20, counted);
    let head = br.fill_buf().map_err(io)?;
    let gz = key.ends_with(".gz") || head.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    })
}

/// A reader that reports the bytes it reads.
struct Counting<'p, R> {
    inner: R,
    progress: Option<ProgressFn<'p>>,
    n: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if let Some(p) = self.progress {
            p(n as u64);
        }
        Ok(n)
    }
}

//! Framing: a 4-byte big-endian length, then that many bytes of UTF-8 XML (one envelope). The same on
//! libp2p streams and on the control socket. The length is checked before the body is allocated.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the limit; the body was not read.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    w.write_all(&encode_frame(body)).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_is_none() {
        let mut bytes = encode_frame(b"<a/>");
        bytes.extend(encode_frame(b""));
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"<a/>");
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 16).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame(&mut &bytes[..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_truncated() {
        let mut bytes = encode_frame(b"hello");
        bytes.truncate(6);
        let err = read_frame(&mut &bytes[..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
        let err = read_frame(&mut &[0u8, 0][..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }
}

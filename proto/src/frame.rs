//! Framing: a 4-byte big-endian unsigned length, then that many bytes of UTF-8 XML (one
//! envelope). The same framing runs on libp2p streams and on the Unix control socket.
//!
//! The reader checks the announced length against its limit before it allocates or reads the
//! body, so a hostile peer cannot make it reserve memory by announcing a large frame. After any
//! [`FrameError`] the stream is out of step (the reader cannot know where the next frame starts):
//! close it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The size of the length prefix, in bytes.
pub const LENGTH_BYTES: usize = 4;

/// The largest body the length prefix can describe.
pub const MAX_FRAME_BYTES: usize = u32::MAX as usize;

/// Why a frame could not be read or written. In every case the stream must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced (or, when writing, the given) length is over the limit; nothing of the body
    /// was read or written.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The stream ended inside a frame: within the length prefix or within the body.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The underlying stream failed.
    #[error("frame I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The length prefix of a body of `len` bytes.
fn prefix(len: usize) -> Result<[u8; LENGTH_BYTES], FrameError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        })
}

/// Encodes one frame (prefix and body) into a new buffer.
pub fn encode_frame(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(LENGTH_BYTES + body.len());
    out.extend_from_slice(&prefix(body.len())?);
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes the first frame of `buf`, for callers that buffer bytes themselves: `Ok(None)` when
/// `buf` does not hold a whole frame yet, otherwise the body and the number of bytes it took.
/// A length over `max` is refused as soon as the prefix is there.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some((head, rest)) = buf.split_first_chunk::<LENGTH_BYTES>() else {
        return Ok(None);
    };
    let len = announced(*head, max)?;
    Ok(rest.get(..len).map(|body| (body, LENGTH_BYTES + len)))
}

fn announced(head: [u8; LENGTH_BYTES], max: usize) -> Result<usize, FrameError> {
    let len = usize::try_from(u32::from_be_bytes(head)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads one frame of at most `max` body bytes: `Ok(None)` on a clean end of stream before a
/// frame starts. A length over `max` is refused before the body is allocated or read.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; LENGTH_BYTES];
    let mut got = 0;
    while got < LENGTH_BYTES {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = announced(head, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// Writes one frame and flushes the stream.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    w.write_all(&prefix(bytes.len())?).await?;
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_is_none() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"<a/>").await.unwrap();
        write_frame(&mut wire, b"").await.unwrap();
        assert_eq!(
            wire,
            [encode_frame(b"<a/>").unwrap(), encode_frame(b"").unwrap()].concat()
        );
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"<a/>");
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 16).await.unwrap().is_none());
    }

    /// A stream that announces a huge frame and fails the test if anyone reads past the prefix.
    struct OnlyAPrefix {
        sent: bool,
    }

    impl AsyncRead for OnlyAPrefix {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            assert!(!self.sent, "the body of an oversized frame was read");
            self.sent = true;
            buf.put_slice(&u32::MAX.to_be_bytes());
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let err = read_frame(&mut OnlyAPrefix { sent: false }, 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max: 1024 } if len == MAX_FRAME_BYTES),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let mut bytes = encode_frame(b"hello").unwrap();
        bytes.truncate(6);
        let err = read_frame(&mut &bytes[..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
        let err = read_frame(&mut &[0u8, 0][..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn a_length_prefix_arriving_byte_by_byte_is_reassembled() {
        let wire = encode_frame(b"<x/>").unwrap();
        let mut r = one_byte_at_a_time(&wire);
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"<x/>");
    }

    /// A reader that hands out one byte per read.
    fn one_byte_at_a_time(bytes: &[u8]) -> impl AsyncRead + Unpin + '_ {
        struct OneByOne<'a>(&'a [u8]);
        impl AsyncRead for OneByOne<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                if let Some((first, rest)) = self.0.split_first() {
                    buf.put_slice(&[*first]);
                    self.0 = rest;
                }
                Poll::Ready(Ok(()))
            }
        }
        OneByOne(bytes)
    }

    #[test]
    fn decode_frame_waits_for_a_whole_frame_and_checks_the_limit_early() {
        let wire = encode_frame(b"abc").unwrap();
        for cut in 0..wire.len() {
            assert!(decode_frame(&wire[..cut], 16).unwrap().is_none());
        }
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        assert_eq!(decode_frame(&two, 16).unwrap(), Some((&b"abc"[..], 7)));
        assert!(matches!(
            decode_frame(&wire[..4], 2),
            Err(FrameError::TooLarge { len: 3, max: 2 })
        ));
    }
}

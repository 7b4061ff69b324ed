//! A request-response codec of length-prefixed byte frames with a hard size cap.
//!
//! The length is read first and checked against the cap before any body is read or allocated, so a
//! peer cannot make the agent buffer more than the cap; an oversized or truncated frame is an I/O
//! error, which fails that one stream and gets the peer disconnected by the agent.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Frames capped at `max_bytes`, same format both ways: a 4-byte big-endian length, then the body.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    /// Largest body accepted or sent.
    pub max_bytes: usize,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    if body.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the {max}-byte limit", body.len()),
        ));
    }
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_bytes).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_bytes).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &req, self.max_bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &res, self.max_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        futures::executor::block_on(async {
            let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
            bytes.extend_from_slice(b"short");
            let err = read_frame(&mut Cursor::new(bytes), 1024).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        futures::executor::block_on(async {
            let mut bytes = 10u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(b"abc");
            assert!(read_frame(&mut Cursor::new(bytes), 1024).await.is_err());
        });
    }

    #[test]
    fn a_frame_round_trips() {
        futures::executor::block_on(async {
            let mut out = Cursor::new(Vec::new());
            write_frame(&mut out, b"hello", 1024).await.unwrap();
            let mut input = Cursor::new(out.into_inner());
            assert_eq!(read_frame(&mut input, 1024).await.unwrap(), b"hello");
        });
    }
}

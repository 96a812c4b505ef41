//! A TCP stream with bytes already read from it in front: the HTTP/1 path reads a request's
//! head straight into a buffer (no peek first), and when the request is not one of its own it
//! hands hyper the socket with those bytes, which hyper reads before the socket's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `io`, whose first bytes are `prefix[pos..]`.
#[derive(Debug)]
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    io: TcpStream,
}

impl Prefixed {
    /// `io` read after `prefix`.
    pub(crate) fn new(prefix: Vec<u8>, io: TcpStream) -> Prefixed {
        Prefixed { prefix, pos: 0, io }
    }

    /// The stream, and what of the prefix was not read yet.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        let mut rest = self.prefix;
        rest.drain(..self.pos.min(rest.len()));
        (self.io, rest)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            if this.pos >= this.prefix.len() {
                // Read whole: its memory goes now, not with the connection.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_socket_and_what_is_left_comes_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b" world").await.unwrap();
        let mut p = Prefixed::new(b"hello".to_vec(), server);
        let mut three = [0u8; 3];
        p.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"hel");
        let (mut server, rest) = p.into_parts();
        assert_eq!(rest, b"lo", "what was not read of the prefix");
        let mut p = Prefixed::new(rest, server);
        let mut all = [0u8; 8];
        p.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"lo world");
        (server, _) = p.into_parts();
        server.write_all(b"!").await.unwrap();
        let mut one = [0u8; 1];
        client.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"!");
    }
}

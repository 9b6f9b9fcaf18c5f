//! What `signet-bench` and `signet-push-blobs` share: reading HTTP/1.1 responses off a
//! keep-alive connection.

pub mod http1;

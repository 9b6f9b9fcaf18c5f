//! Subcommands of `signet` other than `serve`: they work on the stores directly.

pub mod attachments;
pub mod events;
pub mod fsck;
pub mod gc;
pub mod migrate;
pub mod retention;
pub mod sync;
pub mod transfer;
pub mod verify;

//! Images: what kernels run. The aggregate, the workflows that keep an
//! image and its aliases consistent, and the resolver session creation uses.
//!
//! An image's stream is `image:<canonical>@<architecture>`
//! ([`manager_events::image::stream_id`]): one stream per canonical name
//! (`cr.backend.ai/stable/python:3.9-ubuntu20.04`) and architecture, as the
//! reference keeps one row per pair. Registering is idempotent: the same
//! name, architecture and fields a second time append nothing.
//!
//! Aliases (`python`) are reservations (`unique:image-alias:<hash>`) held by
//! the image's stream id, claimed and released in the same atomic append as
//! the image's own `ImageAliased`/`ImageUnaliased`, so an alias names one
//! image at a time, on every manager at once. Aliases compare as
//! reservations do: trimmed and without regard to case.
//!
//! # Resolving a reference
//! [`resolve_image`] takes what a client names an image by and an
//! architecture:
//! 1. an **alias** first: the image holding it, if it is live and of the
//!    requested architecture; if it is of another architecture, the image
//!    of the same canonical name and the requested architecture, if that
//!    one is registered (an alias names one image, but a multi-architecture
//!    name has one image per architecture);
//! 2. then a **canonical name** exactly as given (`registry/repo:tag`).
//!
//! A short name such as `python:3.9-ubuntu20.04` is *not* expanded with a
//! guessed registry or namespace (`cr.backend.ai/stable/…`): a short name
//! resolves only when it is an alias (the default fixture registers
//! `python:3.9-ubuntu20.04` as one). Forgotten images never resolve.
//!
//! # Layout
//! - `aggregate`: the [`Image`] state, [`ImageCommand`]s and validation.
//! - `workflows`: [`RegisterImage`], [`AliasImage`], [`UnaliasImage`],
//!   [`ForgetImage`].
//! - `resolve`: [`resolve_image`] and [`resolve_image_in`].

mod aggregate;
mod resolve;
mod workflows;

pub use aggregate::{Image, ImageCommand, ImageError, parse_canonical, valid_architecture};
pub use manager_events::image::{
    ALIAS_SCOPE, DEFAULT_ARCHITECTURE, ImageEvent, ImageFields, SlotLimits, stream_id,
};
pub use resolve::{resolve_image, resolve_image_in};
pub use workflows::{AliasImage, ForgetImage, RegisterImage, UnaliasImage};

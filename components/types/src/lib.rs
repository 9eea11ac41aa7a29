//! Domain types shared by every Capstan crate.

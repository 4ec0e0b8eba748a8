//! `config_setters!`: one `field(value) -> Self` setter per listed field, so public config
//! structs can be `#[non_exhaustive]` (gain fields without breaking users) and still be
//! built in one expression: `BackoffConfig::default().base(ms(10)).factor(1.5)`.

/// Generates `pub fn $field(mut self, value: $ty) -> Self` for each `$field: $ty`, with the
/// doc comment written before it.
macro_rules! config_setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}
pub(crate) use config_setters;

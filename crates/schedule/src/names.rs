//! Enums that are spelled as strings in diffusers' JSON and on the command
//! line: one macro gives each `as_str`, `ALL`, `Display`, `FromStr` (with an
//! error that lists the valid spellings) and string-based serde.

/// Declares a string-spelled enum. Each variant lists its canonical spelling
/// (written back by `Display` and serde) and, optionally, accepted aliases.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $spelling:literal $(| $alias:literal)*
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling diffusers uses for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling,)+
                }
            }

            /// The accepted spellings, for messages and `--help`.
            pub fn valid_names() -> String {
                let names: &[&str] = &[$(
                    concat!($spelling $(, " (alias ", $alias, ")")*)
                ),+];
                names.join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Error;

            fn from_str(s: &str) -> $crate::Result<Self> {
                match s.trim() {
                    $($spelling $(| $alias)* => Ok($name::$variant),)+
                    _ => Err($crate::Error::UnknownName {
                        what: $what,
                        name: s.to_string(),
                        valid: Self::valid_names(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

# System packages for building crmd on Replit: a Rust toolchain (edition 2024 needs Rust >= 1.88),
# pkg-config and libopus (call recordings are Ogg/Opus).
{ pkgs }: {
  deps = [
    pkgs.rustup
    pkgs.gcc
    pkgs.pkg-config
    pkgs.libopus
    pkgs.git
  ];
}

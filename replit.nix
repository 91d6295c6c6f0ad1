# System packages for building crmd on Replit: a Rust toolchain (the workspace needs Rust >= 1.89),
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

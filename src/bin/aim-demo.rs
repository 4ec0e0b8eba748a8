//! The demo agent as a standalone binary: `cargo run --bin aim-demo -- --help` lists nothing;
//! see the `aim::demo` module docs for its flags and commands.

fn main() {
    std::process::exit(aim::demo::run(std::env::args().skip(1)));
}

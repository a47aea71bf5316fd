fn main() {
    println!("ildiff: CLI coming");
}

//! Pack export: several stickers into one folder per platform, with icons and manifests in the
//! layout each platform's own tooling expects.

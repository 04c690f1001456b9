// The parameters the loss launches share (loss.wgsl, table_loss.wgsl; src/ops/loss.rs).

struct LossParams {
    rows: u32,
    valid: u32,
    d: u32,
    z: u32,
    ld_logits: u32,
    ld_x: u32,
    ld_mulv: u32,
    likelihood: u32,
    beta: f32,
    grad_scale: f32,
    gauss_var: f32,
    // chunks per row: ceil(ld_logits / (4 CHUNK)) for images, 1 for tables
    chunks: u32,
    free_bits: f32,
    // tables: encoded values per record (E) and column blocks
    table_e: u32,
    table_blocks: u32,
    // rows per record (an importance-weighted step's samples)
    samples: u32,
}

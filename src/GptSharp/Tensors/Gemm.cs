using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Tensors;

/// <summary>
/// General matrix multiply over row-major float32 matrices, BLAS-style:
/// C[m,n] = (accumulate ? C : 0) + op(A)[m,k] · op(B)[k,n] (+ bias[n] on every row),
/// where op(X) is X or Xᵀ. Leading dimensions (lda, ldb, ldc) are the row strides, so a view of
/// a wider matrix (one attention head's columns) needs no copy.
/// The three forms a transformer needs:
/// Linear forward y = x·Wᵀ + b is (false, true); dx = dy·W is (false, false); dW += dyᵀ·x is (true, false).
/// </summary>
/// <remarks>
/// The algorithm is the one of BLIS/OpenBLAS (Goto's): the k dimension is cut into KC-deep slices and n into
/// NC-wide panels; each KC×NC slice of op(B) is packed once into NR-wide column slivers, each MC×KC block of
/// op(A) into MR-tall row slivers, so the micro-kernel reads both operands contiguously whatever the
/// transposition and strides. The micro-kernel keeps an MR×NR tile of C in registers for the whole KC loop:
/// 8×32 with Vector512 (16 accumulators, 2 FMAs per broadcast A element), 6×16 with Vector256 (16 ymm
/// registers only), 4×4 scalar. Edge tiles are computed on zero-padded slivers into a scratch tile and merged.
/// With <c>parallel</c>, the MC blocks (and the packing of B) are spread over <see cref="Workers"/>; the packed
/// B slice is shared, each thread packs its own A block, so nothing is packed twice.
/// Few rows (<see cref="IsSkinny"/>: decoding steps, short prompts) go through a direct kernel that reads B once
/// and packs nothing. Scratch is per thread and reused: no allocation per call after warm-up.
/// </remarks>
internal static unsafe class Gemm
{
    /// <summary>The micro-kernel family. Tests force each one; <see cref="BestPath"/> is used otherwise.</summary>
    internal enum KernelPath { Vector512, Vector256, Scalar }

    /// <summary>The fastest path this CPU supports.</summary>
    internal static readonly KernelPath BestPath =
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? KernelPath.Vector512
        : Fma.IsSupported && Avx2.IsSupported ? KernelPath.Vector256
        : KernelPath.Scalar;

    // Cache blocking (AMD Zen 5 here: 48 KiB L1d, 1 MiB L2 per core, 32 MiB L3).
    // k is cut into equal slices of at most KC: the KC×NR micro-panel of B (up to 64 KiB) is reused from L1/L2
    // by every MR-row sliver of an MC×KC block of A (up to 384 KiB, in L2); the KC×NC slice of B (up to 8 MiB)
    // sits in L3 shared by both cores. Deep slices matter most for wide outputs: each slice reads and writes the
    // whole C panel once more (512×50257 C is 103 MB), so KC = 512 (k = 768 in two slices of 384) beat 256
    // by ~15 % on the output head on 2 threads.
    internal const int KC = 512;
    internal const int MC = 192;
    internal const int NC = 4096;

    /// <summary>Depth of each k slice: k split into equal slices of at most <see cref="KC"/>, rounded up to 16
    /// (the transposing packer's block).</summary>
    internal static int SliceDepth(int k)
    {
        int slices = (k + KC - 1) / KC;
        int depth = (k + slices - 1) / slices;
        return Math.Min(KC, (depth + 15) & ~15);
    }

    /// <summary>
    /// Up to this many rows of C, the direct (unpacked) kernel is used. 8 covers a decoding step of the server's default
    /// batch (one row per sequence): packing B for 8 rows read each weight three times (read, write packed, read
    /// packed) where the direct kernel reads it once for all rows (docs/serving.md has the A/B). A switch rather than
    /// a constant so a benchmark can A/B it in one process.
    /// </summary>
    internal static int SkinnyRows = 8;

    /// <summary>
    /// Up to this many rows, a row-exact product (the incremental forward: a short prompt's prefill, a batched step
    /// with prompts riding in it) with B transposed stays on the direct kernel, which forms every element as
    /// <see cref="Dot"/> does, so a row's result never depends on which rows share the call; prompts of 18–32 tokens
    /// also measured faster there than packed (docs/serving.md). Training and evaluation keep <see cref="SkinnyRows"/>,
    /// so their numbers do not change with how many rows a process holds (e.g. per MPI rank). A switch for benchmarks.
    /// </summary>
    internal static int RowExactRows = 32;

    /// <summary>Whether a product of <paramref name="m"/> rows goes through the direct kernel (B as stored: the axpy
    /// form, which streams B once per row, up to <see cref="SkinnyRows"/> only).</summary>
    internal static bool IsSkinny(int m, bool transposeB, bool rowExact)
        => m <= SkinnyRows || (rowExact && transposeB && m <= RowExactRows);

    // Below this many multiply-adds a call stays on the calling thread: waking the pool would cost more.
    private const long ParallelMinWork = 1L << 20;

    // A skinny product is bound by reading B, not by arithmetic: one token's 768×768 projection does only
    // 0.6 M multiply-adds but streams 2.4 MB of weights, which two idle cores read faster than one. With
    // SkinnyParallelByBytes the decision for m ≤ SkinnyRows is made on the bytes of B instead. On by default:
    // with both cores free (AMD Zen 3, 2 cores, load < 1) it saves ~13 % per GPT-2 124M step (median 34.3 against
    // 39.3 ms, interleaved, bench `skinny-ab`); only on a machine so oversubscribed that the second core is rarely
    // free (Zen 5, load 10-13) did the 48 more pool wake-ups per token cost more (37.4 against 34.7 ms).
    private const long SkinnyParallelMinBytes = 256L << 10;

    /// <summary>Whether a product is big enough to wake the pool for.</summary>
    internal static bool WorthParallel(int m, int n, int k)
        => (long)m * n * k >= ParallelMinWork
           || (m <= SkinnyRows && (long)n * k * sizeof(float) >= SkinnyParallelMinBytes && SkinnyParallelByBytes);

    // Switches of the skinny kernel's choices, so a benchmark can A/B them in one process (interleaved, on a
    // shared machine) and a quiet machine can settle them again; the defaults are the measured best.
    internal static bool SkinnyParallelByBytes = true;
    internal static int SkinnyTasksPerThread = 4;

    // How far ahead of its loads Dot4 asks for b's row (in floats; 0 asks for the line it is about to load: no lead).
    // With four or eight rows per weight row the kernel spends as long on arithmetic as on reading the weights, and
    // the hardware prefetcher alone does not keep the weight stream going meanwhile: 2 KB ahead (the next weight
    // row's first part at k = 768) made each 8-row product of a 124M step 10-15 % faster (bench `skinny-shapes`,
    // docs/serving.md).
    internal static int SkinnyPrefetchFloats = 512;

    /// <param name="parallel">Split the work across <see cref="Workers"/>; pass false when the caller already parallelizes (per attention head).</param>
    public static void MatMul(
        bool transposeA, bool transposeB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc,
        bool accumulate = false, float* bias = null, bool parallel = true)
        => MatMul(BestPath, transposeA, transposeB, m, n, k, a, lda, b, ldb, c, ldc, accumulate, bias, parallel);

    /// <summary><see cref="MatMul(bool,bool,int,int,int,float*,int,float*,int,float*,int,bool,float*,bool)"/> on a chosen kernel path (tests).</summary>
    internal static void MatMul(
        KernelPath path, bool transposeA, bool transposeB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc,
        bool accumulate, float* bias, bool parallel, bool rowExact = false)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"GEMM sizes must be non-negative, got m={m}, n={n}, k={k}.");
        if (ldc < n) throw new ArgumentException($"GEMM ldc={ldc} is smaller than n={n}.");
        if (lda < (transposeA ? m : k) || ldb < (transposeB ? k : n))
            throw new ArgumentException($"GEMM leading dimensions too small: lda={lda}, ldb={ldb} for m={m}, n={n}, k={k}, transA={transposeA}, transB={transposeB}.");
        RequireSupported(path);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            // An empty sum: C = (accumulate ? C : 0) + bias.
            for (int i = 0; i < m; i++)
            {
                float* row = c + (long)i * ldc;
                for (int j = 0; j < n; j++) row[j] = (accumulate ? row[j] : 0f) + (bias != null ? bias[j] : 0f);
            }
            return;
        }

        var job = new Job
        {
            Path = path, TransA = transposeA, TransB = transposeB, M = m, N = n, K = k,
            A = a, Lda = lda, B = b, Ldb = ldb, C = c, Ldc = ldc, Accumulate = accumulate, Bias = bias,
        };
        // The pool is used only by a call from outside it that also owns the shared job slot (one parallel
        // GEMM at a time; a concurrent one from another thread simply runs on its own thread).
        bool goParallel = parallel && Workers.Count > 1 && WorthParallel(m, n, k)
                          && !Workers.IsInsideRun && Monitor.TryEnter(SharedJobLock);
        try
        {
            if (IsSkinny(m, transposeB, rowExact)) RunSkinny(ref job, goParallel);
            else RunPacked(ref job, goParallel);
        }
        finally
        {
            if (goParallel) Monitor.Exit(SharedJobLock);
        }
    }

    /// <summary>
    /// C[m,n] = A[m,k] · dequantize(W)ᵀ (+ bias) for int8 weights W [n, k] (value · scale of its block of
    /// <see cref="Int8Matrix.BlockSize"/> in the row): the packed algorithm, with each KC×NR sliver of B dequantized
    /// while it is packed, so no float32 copy of W is made and the result is bit for bit the float32 GEMM's on the
    /// dequantized matrix. For m &gt; <see cref="SkinnyRows"/> (the int8 decode kernels take fewer rows).
    /// </summary>
    internal static void MatMulInt8B(KernelPath path, int m, int n, int k, float* a, int lda, sbyte* values, float* scales, int blocksPerRow,
        float* c, int ldc, float* bias)
    {
        if (m <= SkinnyRows) throw new ArgumentException($"The int8 GEMM is for more than {SkinnyRows} rows, got {m}.");
        if (n <= 0 || k <= 0 || lda < k || ldc < n) throw new ArgumentException($"Bad int8 GEMM sizes: m={m}, n={n}, k={k}, lda={lda}, ldc={ldc}.");
        RequireSupported(path);
        var job = new Job
        {
            Path = path, TransA = false, TransB = true, M = m, N = n, K = k, A = a, Lda = lda, Ldb = k, C = c, Ldc = ldc, Bias = bias,
            BValues = values, BScales = scales, BBlocksPerRow = blocksPerRow,
        };
        bool goParallel = Workers.Count > 1 && WorthParallel(m, n, k) && !Workers.IsInsideRun && Monitor.TryEnter(SharedJobLock);
        try
        {
            RunPacked(ref job, goParallel);
        }
        finally
        {
            if (goParallel) Monitor.Exit(SharedJobLock);
        }
    }

    /// <summary>
    /// C_g[m, n] = A[m, k] · B_gᵀ (+ bias_g) for three weights B_g [n, k] that share their input, for few rows
    /// (the direct kernel's rows of a row-exact product: a decoding step's or a short prompt's query, key and value
    /// projections). One pool run covers the three, so the cores meet at one join where three separate calls had three
    /// (each join waits for the slower core's last chunk), and every element is computed exactly as a row-exact
    /// <see cref="MatMul(KernelPath,bool,bool,int,int,int,float*,int,float*,int,float*,int,bool,float*,bool,bool)"/>
    /// computes it (the same skinny kernel per column). Biases may be null.
    /// </summary>
    internal static void SkinnyLinear3(KernelPath path, int m, int n, int k, float* a,
        float* b0, float* b1, float* b2, float* bias0, float* bias1, float* bias2, float* c0, float* c1, float* c2)
    {
        if (m <= 0 || !IsSkinny(m, transposeB: true, rowExact: true) || n <= 0 || k <= 0) throw new ArgumentException($"The three-way skinny GEMM takes 1..{Math.Max(SkinnyRows, RowExactRows)} rows and positive sizes, got m={m}, n={n}, k={k}.");
        RequireSupported(path);
        Span<Job> jobs =
        [
            SkinnyJob(path, m, n, k, a, b0, bias0, c0), SkinnyJob(path, m, n, k, a, b1, bias1, c1), SkinnyJob(path, m, n, k, a, b2, bias2, c2),
        ];
        bool goParallel = Workers.Count > 1 && WorthParallel(m, n, k) && !Workers.IsInsideRun && Monitor.TryEnter(SharedJobLock);
        if (!goParallel)
        {
            for (int g = 0; g < 3; g++) Skinny(ref jobs[g], 0, n);
            return;
        }
        try
        {
            int width = SkinnyChunkWidth(n, Workers.Count);
            int perMatrix = (n + width - 1) / width;
            for (int g = 0; g < 3; g++)
            {
                jobs[g].ChunkColumns = width;
                s_group[g] = jobs[g];
            }
            s_groupTasks = perMatrix;
            Workers.Run(3 * perMatrix, SkinnyGroupTask);
            s_group.AsSpan().Clear();
        }
        finally
        {
            Monitor.Exit(SharedJobLock);
        }
    }

    private static Job SkinnyJob(KernelPath path, int m, int n, int k, float* a, float* b, float* bias, float* c) => new()
    {
        Path = path, TransA = false, TransB = true, M = m, N = n, K = k, A = a, Lda = k, B = b, Ldb = k, C = c, Ldc = n, Bias = bias,
    };

    // The three jobs of a SkinnyLinear3 run (guarded by SharedJobLock, like s_shared) and the chunks of each.
    private static readonly Job[] s_group = new Job[3];
    private static int s_groupTasks;
    private static readonly Action<int> SkinnyGroupTask = SkinnyGroupChunk;

    private static void SkinnyGroupChunk(int task)
    {
        ref Job job = ref s_group[task / s_groupTasks];
        int j0 = task % s_groupTasks * job.ChunkColumns;
        Skinny(ref job, j0, Math.Min(job.N, j0 + job.ChunkColumns));
    }

    /// <summary>Everything one call needs, passed by reference (sequential) or through <see cref="s_shared"/> (parallel).</summary>
    private struct Job
    {
        public KernelPath Path;
        public bool TransA, TransB, Accumulate;
        public int M, N, K, Lda, Ldb, Ldc;
        public float* A, B, C, Bias;
        // int8 B (MatMulInt8B): op(B) = dequantize(BValues)ᵀ, BValues [n, k] with one scale per block of 32 in a row.
        public sbyte* BValues;
        public float* BScales;
        public int BBlocksPerRow;
        // Current block of the packed algorithm.
        public int Jc, Nc, Pc, Kc, Mc;
        // Columns each compute task covers (packed: of the NC panel; skinny: of C), and row blocks per column chunk.
        public int ChunkColumns, RowBlocks;
        public float* PackedB;
        public int PackTasks;
    }

    private static readonly object SharedJobLock = new();
    private static Job s_shared;
    // Cached delegates: a Workers.Run call allocates nothing.
    private static readonly Action<int> PackBTask = PackBSlivers;
    private static readonly Action<int> ComputeTask = ComputeBlock;
    private static readonly Action<int> SkinnyTask = SkinnyChunk;

    private static void Tile(KernelPath path, out int mr, out int nr)
    {
        switch (path)
        {
            case KernelPath.Vector512: mr = 8; nr = 32; break;
            case KernelPath.Vector256: mr = 6; nr = 16; break;
            default: mr = 4; nr = 4; break;
        }
    }

    // ---------------------------------------------------------------- packed algorithm

    /// <summary>
    /// How one NC panel of C is cut into compute tasks: row blocks of <see cref="RowBlock"/> rows (a multiple of MR)
    /// times column chunks of <see cref="ChunkColumns"/> columns (a multiple of NR). Tiles never straddle a
    /// micro-tile boundary, so every element of C is computed by the same micro-kernel calls in the same order
    /// whatever the thread count: results do not depend on it.
    /// </summary>
    internal readonly record struct Partition(int RowBlock, int RowBlocks, int ChunkColumns, int ColumnChunks)
    {
        public int Tasks => RowBlocks * ColumnChunks;
    }

    /// <summary>Rows a block keeps before the columns are split too: each packed B sliver is then reused by at least
    /// 8 micro-tiles of A (a block of 16 rows, as 16 threads would get on 512 rows, reuses it twice and runs from L3).</summary>
    internal const int MinBlockRows = 64;

    /// <summary>Narrowest column chunk, in NR-wide slivers.</summary>
    internal const int MinChunkSlivers = 4;

    /// <summary>
    /// The partition of an m × <paramref name="panelColumns"/> panel for <paramref name="threads"/> threads: one
    /// task per thread and MC block on one thread; otherwise at least two tasks per thread (a core slowed by
    /// another process then takes fewer), row blocks first — as tall as possible, down to
    /// <see cref="MinBlockRows"/> — and column chunks when the rows run out (512 rows on 16 or 32 threads).
    /// </summary>
    internal static Partition PlanPanel(int m, int panelColumns, int threads, int mr, int nr)
    {
        int mcMax = MC / mr * mr;
        int slivers = CeilDiv(panelColumns, nr);
        int allRows = RoundUp(m, mr);
        if (threads <= 1) return Make(Math.Min(mcMax, allRows), slivers);
        int target = 2 * threads;
        int mc = Math.Clamp(RoundUp(CeilDiv(m, target), mr), Math.Min(RoundUp(MinBlockRows, mr), allRows), Math.Min(mcMax, allRows));
        int rowBlocks = CeilDiv(m, mc);
        // A last block much shorter than the others leaves one thread idle at the end: 200 rows (a short prompt) in
        // blocks of 66 were 66, 66, 66 and 2, so one core ran 132 rows and the other 68. Fewer, evenly cut blocks
        // instead (200 rows: 72, 72, 56, with the columns split in two to keep two tasks per thread).
        if (EvenRowBlocks && rowBlocks > 1 && m - (rowBlocks - 1) * mc < mc / 2 && CeilDiv(m, rowBlocks - 1) <= mcMax) rowBlocks--;
        mc = RoundUp(CeilDiv(m, rowBlocks), mr);
        rowBlocks = CeilDiv(m, mc);
        int chunks = Math.Min(Math.Max(1, slivers / MinChunkSlivers), CeilDiv(target, rowBlocks));
        if (rowBlocks * chunks < target)
        {
            // Every column chunk is as narrow as allowed: cut the rows finer (down to one micro-tile).
            rowBlocks = Math.Min(CeilDiv(m, mr), CeilDiv(target, chunks));
            mc = RoundUp(CeilDiv(m, rowBlocks), mr);
        }
        return Make(mc, CeilDiv(slivers, chunks));

        Partition Make(int rowBlock, int chunkSlivers) =>
            new(rowBlock, CeilDiv(m, rowBlock), chunkSlivers * nr, CeilDiv(slivers, chunkSlivers));
    }

    /// <summary>Refuses a kernel path this CPU cannot run (tests force each path; a forced path must exist here).</summary>
    internal static void RequireSupported(KernelPath path)
    {
        if (path == KernelPath.Vector512 && !Avx512F.IsSupported) throw new PlatformNotSupportedException("This CPU has no AVX-512.");
        if (path == KernelPath.Vector256 && !(Fma.IsSupported && Avx2.IsSupported)) throw new PlatformNotSupportedException("This CPU has no AVX2/FMA.");
    }

    /// <summary>Whether <see cref="PlanPanel"/> evens out a short last row block (a switch so a benchmark can A/B it in one process).</summary>
    internal static bool EvenRowBlocks = true;

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
    private static int RoundUp(int a, int multiple) => CeilDiv(a, multiple) * multiple;

    private static void RunPacked(ref Job job, bool parallel)
    {
        Tile(job.Path, out int mr, out int nr);
        int threads = parallel ? Workers.Count : 1;
        int ncMax = Math.Min(NC, (job.N + nr - 1) / nr * nr);
        int kcMax = Math.Min(SliceDepth(job.K), job.K);
        job.PackedB = Scratch.PackB(ncMax * kcMax);

        if (parallel) s_shared = job;
        for (int jc = 0; jc < job.N; jc += NC)
        {
            int nc = Math.Min(NC, job.N - jc);
            var plan = PlanPanel(job.M, nc, threads, mr, nr);
            job.Mc = plan.RowBlock; job.RowBlocks = plan.RowBlocks; job.ChunkColumns = plan.ChunkColumns;
            for (int pc = 0; pc < job.K; pc += kcMax)
            {
                int kc = Math.Min(kcMax, job.K - pc);
                job.Jc = jc; job.Nc = nc; job.Pc = pc; job.Kc = kc;
                int slivers = (nc + nr - 1) / nr;
                if (parallel)
                {
                    s_shared.Jc = jc; s_shared.Nc = nc; s_shared.Pc = pc; s_shared.Kc = kc;
                    s_shared.Mc = job.Mc; s_shared.RowBlocks = job.RowBlocks; s_shared.ChunkColumns = job.ChunkColumns;
                    s_shared.PackTasks = Math.Min(slivers, 2 * threads);
                    Workers.Run(s_shared.PackTasks, PackBTask);
                    Workers.Run(plan.Tasks, ComputeTask);
                }
                else
                {
                    PackB(ref job, 0, slivers);
                    for (int task = 0; task < plan.Tasks; task++) Compute(ref job, task);
                }
            }
        }
        if (parallel) s_shared = default;
    }

    private static void PackBSlivers(int task)
    {
        ref Job job = ref s_shared;
        Tile(job.Path, out _, out int nr);
        int slivers = (job.Nc + nr - 1) / nr;
        int tasks = job.PackTasks;
        int from = (int)((long)slivers * task / tasks), to = (int)((long)slivers * (task + 1) / tasks);
        PackB(ref job, from, to);
    }

    private static void ComputeBlock(int task) => Compute(ref s_shared, task);

    /// <summary>Packs slivers [from, to) of the current KC×NC slice of op(B): sliver s holds columns
    /// jc + s·NR .. +NR as KC rows of NR floats (zero-padded past n).</summary>
    private static void PackB(ref Job job, int from, int to)
    {
        Tile(job.Path, out _, out int nr);
        int kc = job.Kc;
        for (int s = from; s < to; s++)
        {
            int j0 = job.Jc + s * nr;
            int cols = Math.Min(nr, job.Jc + job.Nc - j0);
            float* dst = job.PackedB + (long)s * nr * kc;
            if (!job.TransB)
            {
                // op(B)[p, j] = b[p·ldb + j]: each packed row is a contiguous copy.
                float* src = job.B + (long)job.Pc * job.Ldb + j0;
                if (cols == nr && job.Path == KernelPath.Vector512)
                {
                    for (int p = 0; p < kc; p++, src += job.Ldb, dst += 32)
                    {
                        Vector512.Store(Vector512.Load(src), dst);
                        Vector512.Store(Vector512.Load(src + 16), dst + 16);
                    }
                }
                else if (cols == nr && job.Path == KernelPath.Vector256)
                {
                    for (int p = 0; p < kc; p++, src += job.Ldb, dst += 16)
                    {
                        Vector256.Store(Vector256.Load(src), dst);
                        Vector256.Store(Vector256.Load(src + 8), dst + 8);
                    }
                }
                else
                {
                    for (int p = 0; p < kc; p++, src += job.Ldb, dst += nr)
                    {
                        int j = 0;
                        for (; j < cols; j++) dst[j] = src[j];
                        for (; j < nr; j++) dst[j] = 0f;
                    }
                }
            }
            else if (job.BValues != null)
            {
                // int8 B: the sliver's rows dequantized into L1 scratch (cols × kc), then the same transpose as float32.
                float* rows = Scratch.Dequantized((long)nr * kc);
                for (int r = 0; r < cols; r++)
                {
                    long row = j0 + r;
                    Int8Kernels.DequantizeInt8Range(job.Path, job.BValues + row * job.K, job.BScales + row * job.BBlocksPerRow,
                        job.Pc, job.Pc + kc, rows + (long)r * kc - job.Pc);
                }
                PackTransposedSliver(job.Path, rows, kc, kc, cols, nr, dst);
            }
            else
            {
                PackTransposedSliver(job.Path, job.B + (long)j0 * job.Ldb + job.Pc, job.Ldb, kc, cols, nr, dst);
            }
        }
    }

    /// <summary>
    /// One sliver of a transposed op(B): op(B)[p, j] = src[j·ldb + p] for p &lt; kc, j &lt; cols, as kc rows of nr floats
    /// (zero-padded past cols). 16×16 register transposes on the Vector512 path, 8×8 on Vector256.
    /// </summary>
    private static void PackTransposedSliver(KernelPath path, float* src, long ldb, int kc, int cols, int nr, float* dst)
    {
        int p = 0;
        if (cols == nr && path == KernelPath.Vector512)
        {
            // One 16-row group at a time: 16 sequential read streams for the prefetchers, not 32.
            int whole = kc & ~15;
            for (int half = 0; half < 2; half++)
                for (int q = 0; q < whole; q += 16)
                {
                    float* block = src + half * 16L * ldb + q;
                    // The rows' lines two blocks ahead: 16 streams are more than the L1 prefetcher follows.
                    for (int r = 0; r < 16; r++) Sse.Prefetch0(block + r * (long)ldb + 32);
                    Transpose16x16(block, ldb, dst + (long)q * 32 + half * 16, 32);
                }
            p = whole;
        }
        else if (cols == nr && path == KernelPath.Vector256)
        {
            // 8×8 AVX transposes: rows 0-7 then 8-15 of the 16-column sliver.
            int whole = kc & ~7;
            for (int half = 0; half < 2; half++)
                for (int q = 0; q < whole; q += 8)
                    Transpose8x8(src + half * 8L * ldb + q, ldb, dst + (long)q * 16 + half * 8, 16);
            p = whole;
        }
        for (; p < kc; p++)
        {
            float* d = dst + (long)p * nr;
            int j = 0;
            for (; j < cols; j++) d[j] = src[(long)j * ldb + p];
            for (; j < nr; j++) d[j] = 0f;
        }
    }

    /// <summary>Packs rows i0 .. i0+mc of the current KC slice of op(A) into MR-tall slivers: sliver s holds
    /// KC columns of MR floats (zero-padded past m).</summary>
    private static void PackA(ref Job job, int i0, int mc, float* dst)
    {
        Tile(job.Path, out int mr, out _);
        int kc = job.Kc;
        for (int r0 = 0; r0 < mc; r0 += mr, dst += (long)mr * kc)
        {
            int i = i0 + r0;
            int rows = Math.Min(mr, job.M - i);
            if (job.TransA)
            {
                // op(A)[i, p] = a[p·lda + i]: each packed column is a contiguous copy.
                float* src = job.A + (long)job.Pc * job.Lda + i;
                if (rows == mr && mr == 8 && job.Path == KernelPath.Vector512)
                {
                    for (int p = 0; p < kc; p++, src += job.Lda) Vector256.Store(Vector256.Load(src), dst + p * 8);
                }
                else
                {
                    for (int p = 0; p < kc; p++, src += job.Lda)
                    {
                        float* d = dst + (long)p * mr;
                        int r = 0;
                        for (; r < rows; r++) d[r] = src[r];
                        for (; r < mr; r++) d[r] = 0f;
                    }
                }
            }
            else
            {
                // op(A)[i, p] = a[i·lda + p]: a transpose. 8×8 register transposes on the Vector512 path.
                float* src = job.A + (long)i * job.Lda + job.Pc;
                int p = 0;
                if (rows == mr && mr == 8 && job.Path == KernelPath.Vector512)
                {
                    for (; p + 8 <= kc; p += 8)
                    {
                        // Every other block, the rows' lines 64 floats ahead (see PackB).
                        if ((p & 15) == 0)
                            for (int r = 0; r < 8; r++) Sse.Prefetch0(src + r * (long)job.Lda + p + 64);
                        Transpose8x8(src + p, job.Lda, dst + (long)p * 8, 8);
                    }
                }
                for (; p < kc; p++)
                {
                    float* d = dst + (long)p * mr;
                    int r = 0;
                    for (; r < rows; r++) d[r] = src[(long)r * job.Lda + p];
                    for (; r < mr; r++) d[r] = 0f;
                }
            }
        }
    }

    /// <summary>One tile of the current NC panel's partition, for the current KC slice: C rows [rb·Mc, +Mc) ×
    /// panel columns [cb·ChunkColumns, +ChunkColumns), task = cb·RowBlocks + rb (consecutive tasks share a B chunk).</summary>
    private static void Compute(ref Job job, int task)
    {
        Tile(job.Path, out int mr, out int nr);
        int rowBlock = task % job.RowBlocks, chunk = task / job.RowBlocks;
        int i0 = rowBlock * job.Mc;
        int mc = Math.Min(job.Mc, job.M - i0);
        int kc = job.Kc;
        int jrFrom = chunk * job.ChunkColumns, jrTo = Math.Min(job.Nc, jrFrom + job.ChunkColumns);
        // Sized for the tallest block any partition makes, so the scratch is allocated once per thread.
        float* packedA = Scratch.PackA((long)RoundUp(MC, mr) * KC);
        PackA(ref job, i0, mc, packedA);

        // The first KC slice writes C (or adds to it when the caller accumulates) and adds the bias;
        // later slices add to what the first wrote.
        bool accumulate = job.Accumulate || job.Pc > 0;
        float* bias = job.Pc == 0 ? job.Bias : null;
        float* edge = stackalloc float[32 * 8 + 16];
        float* tile = (float*)(((nint)edge + 63) & ~(nint)63);

        for (int jr = jrFrom; jr < jrTo; jr += nr)
        {
            int cols = Math.Min(nr, job.Nc - jr);
            int j = job.Jc + jr;
            float* bp = job.PackedB + (long)jr * kc;
            float* biasJ = bias != null ? bias + j : null;
            for (int ir = 0; ir < mc; ir += mr)
            {
                int rows = Math.Min(mr, mc - ir);
                float* ap = packedA + (long)ir * kc;
                float* cp = job.C + (long)(i0 + ir) * job.Ldc + j;
                if (rows == mr && cols == nr)
                {
                    MicroKernel(job.Path, kc, ap, bp, cp, job.Ldc, accumulate, biasJ);
                }
                else
                {
                    MicroKernel(job.Path, kc, ap, bp, tile, nr, false, null);
                    for (int r = 0; r < rows; r++)
                    {
                        float* dst = cp + (long)r * job.Ldc;
                        float* src = tile + r * nr;
                        for (int q = 0; q < cols; q++)
                            dst[q] = (accumulate ? dst[q] : 0f) + src[q] + (biasJ != null ? biasJ[q] : 0f);
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MicroKernel(KernelPath path, int kc, float* a, float* b, float* c, long ldc, bool accumulate, float* bias)
    {
        switch (path)
        {
            case KernelPath.Vector512: Kernel8x32(kc, a, b, c, ldc, accumulate, bias); break;
            case KernelPath.Vector256: Kernel6x16(kc, a, b, c, ldc, accumulate, bias); break;
            default: Kernel4x4(kc, a, b, c, ldc, accumulate, bias); break;
        }
    }

    // ---------------------------------------------------------------- micro-kernels

    /// <summary>C[8×32] (+)= Ap[8×kc]·Bp[kc×32] (+ bias): 16 zmm accumulators, per k step two B loads,
    /// eight broadcasts of A and sixteen FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel8x32(int kc, float* a, float* b, float* c, long ldc, bool accumulate, float* bias)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector512<float> c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default;
        // The C tile is read (or written) only after the k loop; ask for its 16 cache lines now so they
        // arrive from L2/L3 during the ~2000 cycles of FMAs instead of stalling the stores at the end
        // (a C panel wider than L2, e.g. 512×3072, otherwise costs ~10 %).
        for (int r = 0; r < 8; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + 16);
        }
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> x = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]);
            c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]);
            c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
            a += 8;
            b += 32;
        }
        Vector512<float> bias0 = Vector512<float>.Zero, bias1 = Vector512<float>.Zero;
        if (bias != null) { bias0 = Vector512.Load(bias); bias1 = Vector512.Load(bias + 16); }
        StoreRow512(c, c00 + bias0, c01 + bias1, accumulate); c += ldc;
        StoreRow512(c, c10 + bias0, c11 + bias1, accumulate); c += ldc;
        StoreRow512(c, c20 + bias0, c21 + bias1, accumulate); c += ldc;
        StoreRow512(c, c30 + bias0, c31 + bias1, accumulate); c += ldc;
        StoreRow512(c, c40 + bias0, c41 + bias1, accumulate); c += ldc;
        StoreRow512(c, c50 + bias0, c51 + bias1, accumulate); c += ldc;
        StoreRow512(c, c60 + bias0, c61 + bias1, accumulate); c += ldc;
        StoreRow512(c, c70 + bias0, c71 + bias1, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow512(float* c, Vector512<float> x0, Vector512<float> x1, bool accumulate)
    {
        if (accumulate)
        {
            x0 += Vector512.Load(c);
            x1 += Vector512.Load(c + 16);
        }
        Vector512.Store(x0, c);
        Vector512.Store(x1, c + 16);
    }

    /// <summary>C[6×16] (+)= Ap[6×kc]·Bp[kc×16] (+ bias): 12 ymm accumulators, fits the 16 AVX2 registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x16(int kc, float* a, float* b, float* c, long ldc, bool accumulate, float* bias)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int r = 0; r < 6; r++) Sse.Prefetch0(c + r * ldc); // the C tile, early (see Kernel8x32)
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 8);
            Vector256<float> x = Vector256.Create(a[0]);
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01);
            x = Vector256.Create(a[1]);
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11);
            x = Vector256.Create(a[2]);
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21);
            x = Vector256.Create(a[3]);
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31);
            x = Vector256.Create(a[4]);
            c40 = Fma.MultiplyAdd(x, b0, c40); c41 = Fma.MultiplyAdd(x, b1, c41);
            x = Vector256.Create(a[5]);
            c50 = Fma.MultiplyAdd(x, b0, c50); c51 = Fma.MultiplyAdd(x, b1, c51);
            a += 6;
            b += 16;
        }
        Vector256<float> bias0 = Vector256<float>.Zero, bias1 = Vector256<float>.Zero;
        if (bias != null) { bias0 = Vector256.Load(bias); bias1 = Vector256.Load(bias + 8); }
        StoreRow256(c, c00 + bias0, c01 + bias1, accumulate); c += ldc;
        StoreRow256(c, c10 + bias0, c11 + bias1, accumulate); c += ldc;
        StoreRow256(c, c20 + bias0, c21 + bias1, accumulate); c += ldc;
        StoreRow256(c, c30 + bias0, c31 + bias1, accumulate); c += ldc;
        StoreRow256(c, c40 + bias0, c41 + bias1, accumulate); c += ldc;
        StoreRow256(c, c50 + bias0, c51 + bias1, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow256(float* c, Vector256<float> x0, Vector256<float> x1, bool accumulate)
    {
        if (accumulate)
        {
            x0 += Vector256.Load(c);
            x1 += Vector256.Load(c + 8);
        }
        Vector256.Store(x0, c);
        Vector256.Store(x1, c + 8);
    }

    /// <summary>C[4×4] (+)= Ap[4×kc]·Bp[kc×4] (+ bias): the portable path for CPUs without AVX.</summary>
    private static void Kernel4x4(int kc, float* a, float* b, float* c, long ldc, bool accumulate, float* bias)
    {
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int p = 0; p < kc; p++)
        {
            float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
            float x = a[0]; c00 += x * b0; c01 += x * b1; c02 += x * b2; c03 += x * b3;
            x = a[1]; c10 += x * b0; c11 += x * b1; c12 += x * b2; c13 += x * b3;
            x = a[2]; c20 += x * b0; c21 += x * b1; c22 += x * b2; c23 += x * b3;
            x = a[3]; c30 += x * b0; c31 += x * b1; c32 += x * b2; c33 += x * b3;
            a += 4;
            b += 4;
        }
        float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        if (bias != null) { d0 = bias[0]; d1 = bias[1]; d2 = bias[2]; d3 = bias[3]; }
        StoreRow4(c, c00 + d0, c01 + d1, c02 + d2, c03 + d3, accumulate); c += ldc;
        StoreRow4(c, c10 + d0, c11 + d1, c12 + d2, c13 + d3, accumulate); c += ldc;
        StoreRow4(c, c20 + d0, c21 + d1, c22 + d2, c23 + d3, accumulate); c += ldc;
        StoreRow4(c, c30 + d0, c31 + d1, c32 + d2, c33 + d3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow4(float* c, float x0, float x1, float x2, float x3, bool accumulate)
    {
        if (accumulate) { c[0] += x0; c[1] += x1; c[2] += x2; c[3] += x3; }
        else { c[0] = x0; c[1] = x1; c[2] = x2; c[3] = x3; }
    }

    // ---------------------------------------------------------------- register transposes for packing

    /// <summary>dst[p·ldd + r] = src[r·lds + p] for a 16×16 block (four shuffle stages, 64 shuffles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16x16(float* src, long lds, float* dst, long ldd)
    {
        Vector512<float> r0 = Vector512.Load(src), r1 = Vector512.Load(src + lds);
        Vector512<float> r2 = Vector512.Load(src + 2 * lds), r3 = Vector512.Load(src + 3 * lds);
        Vector512<float> r4 = Vector512.Load(src + 4 * lds), r5 = Vector512.Load(src + 5 * lds);
        Vector512<float> r6 = Vector512.Load(src + 6 * lds), r7 = Vector512.Load(src + 7 * lds);
        Vector512<float> r8 = Vector512.Load(src + 8 * lds), r9 = Vector512.Load(src + 9 * lds);
        Vector512<float> r10 = Vector512.Load(src + 10 * lds), r11 = Vector512.Load(src + 11 * lds);
        Vector512<float> r12 = Vector512.Load(src + 12 * lds), r13 = Vector512.Load(src + 13 * lds);
        Vector512<float> r14 = Vector512.Load(src + 14 * lds), r15 = Vector512.Load(src + 15 * lds);

        // Stage 1: interleave pairs of rows within each 128-bit lane.
        Vector512<float> t0 = Avx512F.UnpackLow(r0, r1), t1 = Avx512F.UnpackHigh(r0, r1);
        Vector512<float> t2 = Avx512F.UnpackLow(r2, r3), t3 = Avx512F.UnpackHigh(r2, r3);
        Vector512<float> t4 = Avx512F.UnpackLow(r4, r5), t5 = Avx512F.UnpackHigh(r4, r5);
        Vector512<float> t6 = Avx512F.UnpackLow(r6, r7), t7 = Avx512F.UnpackHigh(r6, r7);
        Vector512<float> t8 = Avx512F.UnpackLow(r8, r9), t9 = Avx512F.UnpackHigh(r8, r9);
        Vector512<float> t10 = Avx512F.UnpackLow(r10, r11), t11 = Avx512F.UnpackHigh(r10, r11);
        Vector512<float> t12 = Avx512F.UnpackLow(r12, r13), t13 = Avx512F.UnpackHigh(r12, r13);
        Vector512<float> t14 = Avx512F.UnpackLow(r14, r15), t15 = Avx512F.UnpackHigh(r14, r15);

        // Stage 2: interleave 64-bit pairs: each lane now holds one column of four consecutive rows.
        r0 = UnpackLowPd(t0, t2); r1 = UnpackHighPd(t0, t2); r2 = UnpackLowPd(t1, t3); r3 = UnpackHighPd(t1, t3);
        r4 = UnpackLowPd(t4, t6); r5 = UnpackHighPd(t4, t6); r6 = UnpackLowPd(t5, t7); r7 = UnpackHighPd(t5, t7);
        r8 = UnpackLowPd(t8, t10); r9 = UnpackHighPd(t8, t10); r10 = UnpackLowPd(t9, t11); r11 = UnpackHighPd(t9, t11);
        r12 = UnpackLowPd(t12, t14); r13 = UnpackHighPd(t12, t14); r14 = UnpackLowPd(t13, t15); r15 = UnpackHighPd(t13, t15);

        // Stages 3 and 4: move 128-bit lanes so each register gathers one column of all sixteen rows.
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t1 = Avx512F.Shuffle4x128(r1, r5, 0x88);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t3 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD); t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD); t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t9 = Avx512F.Shuffle4x128(r9, r13, 0x88);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t11 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD); t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD); t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);

        Vector512.Store(Avx512F.Shuffle4x128(t0, t8, 0x88), dst);
        Vector512.Store(Avx512F.Shuffle4x128(t1, t9, 0x88), dst + ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t2, t10, 0x88), dst + 2 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t3, t11, 0x88), dst + 3 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t4, t12, 0x88), dst + 4 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t5, t13, 0x88), dst + 5 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t6, t14, 0x88), dst + 6 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t7, t15, 0x88), dst + 7 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t0, t8, 0xDD), dst + 8 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t1, t9, 0xDD), dst + 9 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t2, t10, 0xDD), dst + 10 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t3, t11, 0xDD), dst + 11 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t4, t12, 0xDD), dst + 12 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t5, t13, 0xDD), dst + 13 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t6, t14, 0xDD), dst + 14 * ldd);
        Vector512.Store(Avx512F.Shuffle4x128(t7, t15, 0xDD), dst + 15 * ldd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> UnpackLowPd(Vector512<float> x, Vector512<float> y)
        => Avx512F.UnpackLow(x.AsDouble(), y.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> UnpackHighPd(Vector512<float> x, Vector512<float> y)
        => Avx512F.UnpackHigh(x.AsDouble(), y.AsDouble()).AsSingle();

    /// <summary>dst[p·ldd + r] = src[r·lds + p] for an 8×8 block (AVX shuffles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* src, long lds, float* dst, long ldd)
    {
        Vector256<float> r0 = Vector256.Load(src), r1 = Vector256.Load(src + lds);
        Vector256<float> r2 = Vector256.Load(src + 2 * lds), r3 = Vector256.Load(src + 3 * lds);
        Vector256<float> r4 = Vector256.Load(src + 4 * lds), r5 = Vector256.Load(src + 5 * lds);
        Vector256<float> r6 = Vector256.Load(src + 6 * lds), r7 = Vector256.Load(src + 7 * lds);
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);
        Vector256.Store(Avx.Permute2x128(u0, u4, 0x20), dst);
        Vector256.Store(Avx.Permute2x128(u1, u5, 0x20), dst + ldd);
        Vector256.Store(Avx.Permute2x128(u2, u6, 0x20), dst + 2 * ldd);
        Vector256.Store(Avx.Permute2x128(u3, u7, 0x20), dst + 3 * ldd);
        Vector256.Store(Avx.Permute2x128(u0, u4, 0x31), dst + 4 * ldd);
        Vector256.Store(Avx.Permute2x128(u1, u5, 0x31), dst + 5 * ldd);
        Vector256.Store(Avx.Permute2x128(u2, u6, 0x31), dst + 6 * ldd);
        Vector256.Store(Avx.Permute2x128(u3, u7, 0x31), dst + 7 * ldd);
    }

    // ---------------------------------------------------------------- skinny (few rows) algorithm

    // Parallel skinny tasks per thread (SkinnyTasksPerThread): a few each, so a core slowed by another process
    // takes fewer (tasks are handed out dynamically), and the count is a multiple of the thread count, so on a
    // quiet machine every thread gets the same share (768 columns on 2 threads: 6 tasks of 128, not 3 of 256).
    // 4, 16 or 100 per thread measured the same within noise on the 124M step.

    // Chunk widths are whole multiples of the widest column block of the kernels (64 floats = 4 zmm).
    private const int SkinnyChunkAlign = 64;

    /// <summary>Columns per parallel task for n columns on <paramref name="threads"/> threads.</summary>
    internal static int SkinnyChunkWidth(int n, int threads)
    {
        int perTask = (n + threads * SkinnyTasksPerThread - 1) / (threads * SkinnyTasksPerThread);
        int width = (perTask + SkinnyChunkAlign - 1) / SkinnyChunkAlign * SkinnyChunkAlign;
        // Keep the task count a multiple of the thread count where the width allows it.
        int tasks = (n + width - 1) / width;
        if (tasks % threads != 0 && tasks > threads)
        {
            int even = (tasks + threads - 1) / threads * threads;
            int evenWidth = (n + even - 1) / even;
            evenWidth = (evenWidth + SkinnyChunkAlign - 1) / SkinnyChunkAlign * SkinnyChunkAlign;
            if ((n + evenWidth - 1) / evenWidth % threads == 0) width = evenWidth;
        }
        return width;
    }

    private static void RunSkinny(ref Job job, bool parallel)
    {
        if (parallel)
        {
            int width = SkinnyChunkWidth(job.N, Workers.Count);
            int tasks = (job.N + width - 1) / width;
            job.ChunkColumns = width;
            s_shared = job;
            Workers.Run(tasks, SkinnyTask);
            s_shared = default;
        }
        else
        {
            Skinny(ref job, 0, job.N);
        }
    }

    private static void SkinnyChunk(int task)
    {
        ref Job job = ref s_shared;
        int j0 = task * job.ChunkColumns;
        Skinny(ref job, j0, Math.Min(job.N, j0 + job.ChunkColumns));
    }

    /// <summary>Columns [j0, j1) of C for few rows (<see cref="IsSkinny"/>): reads B once, packs nothing.</summary>
    private static void Skinny(ref Job job, int j0, int j1)
    {
        int m = job.M, k = job.K;
        // Rows of op(A) contiguous over k: a transposed A is gathered into per-thread scratch once.
        float* rows = job.A;
        long rowStride = job.Lda;
        if (job.TransA)
        {
            rows = Scratch.PackA((long)m * k);
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++) rows[(long)i * k + p] = job.A[(long)p * job.Lda + i];
            rowStride = k;
        }

        if (job.TransB)
        {
            // C[i, j] = dot(op(A) row i, b row j), column outermost: row j of b is read from memory once and
            // reused from L1 by every row of A (rows inner would stream all of b m times).
            // (Four columns per pass, sharing each load of A, measured slower on one token: 38.9 against
            // 34.7 ms per step, interleaved, bench `skinny-ab`; more read streams per core do not pay.)
            // Four rows at a time share each load of b's row (a batched decoding step: one row per sequence).
            float* sums = stackalloc float[6];
            int jt = j0;
            // Two rows by three weight rows at a time (each load shared by two or three multiply-adds) where the
            // activation rows would not stay in L1 over a weight row (k ≥ SkinnyTileMinK) or there are more rows than
            // a decoding step's SkinnyRows; four rows per weight row otherwise (measured faster there: docs/serving.md).
            if (m >= 2 && SkinnyTiles && (m > SkinnyRows || k >= SkinnyTileMinK))
            {
                for (; jt + 3 <= j1; jt += 3)
                {
                    float* brow = job.B + (long)jt * job.Ldb;
                    int i = 0;
                    for (; i + 2 <= m; i += 2)
                    {
                        DotTile2x3(job.Path, rows + i * rowStride, rowStride, brow, job.Ldb, k, sums, prefetchNext: i == 0 && jt + 6 <= job.N);
                        for (int r = 0; r < 2; r++)
                            for (int col = 0; col < 3; col++)
                                Store(job.C + (long)(i + r) * job.Ldc + jt + col, sums[r * 3 + col], job.Accumulate, job.Bias, jt + col);
                    }
                    if (i < m)
                        for (int col = 0; col < 3; col++)
                            Store(job.C + (long)i * job.Ldc + jt + col, Dot(job.Path, rows + i * rowStride, brow + (long)col * job.Ldb, k), job.Accumulate, job.Bias, jt + col);
                }
            }
            for (int j = jt; j < j1; j++)
            {
                float* brow = job.B + (long)j * job.Ldb;
                int i = 0;
                for (; i + 4 <= m; i += 4)
                {
                    Dot4(job.Path, rows + i * rowStride, rowStride, brow, k, sums);
                    for (int r = 0; r < 4; r++) Store(job.C + (long)(i + r) * job.Ldc + j, sums[r], job.Accumulate, job.Bias, j);
                }
                for (; i < m; i++)
                {
                    float sum = Dot(job.Path, rows + i * rowStride, brow, k);
                    Store(job.C + (long)i * job.Ldc + j, sum, job.Accumulate, job.Bias, j);
                }
            }
            return;
        }

        for (int i = 0; i < m; i++)
        {
            // C[i, j0:j1] = Σp A[i, p] · b row p (an axpy per p over contiguous columns).
            SkinnyRowTimesB(ref job, rows + i * rowStride, job.C + (long)i * job.Ldc, j0, j1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* dst, float sum, bool accumulate, float* bias, int j)
    {
        if (bias != null) sum += bias[j];
        *dst = accumulate ? *dst + sum : sum;
    }

    /// <summary>dot(x, y) over float32 on the given vector width (also the int8 decode kernel's, on a dequantized row).</summary>
    internal static float Dot(KernelPath path, float* x, float* y, int k) => Simd.Reduce(path, k, new DotOp { X = x, Y = y });

    /// <summary>
    /// dot(x row r, y) for the four rows x, x + stride, x + 2·stride, x + 3·stride into <paramref name="sums"/>[r]: each
    /// vector of y is loaded once for four rows. Every row's sum is formed exactly as <see cref="Dot"/> forms it (two
    /// accumulators, the one-vector remainder, the lane sum, the scalar tail in order), so a row's result never depends
    /// on which rows share its call: a sequence decoded in a batch gets the logits it gets alone, bit for bit.
    /// </summary>
    private static void Dot4(KernelPath path, float* x, long stride, float* y, int k, float* sums)
    {
        float* x0 = x, x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        float* ahead = y + SkinnyPrefetchFloats;
        int i = 0;
        float t0 = 0f, t1 = 0f, t2 = 0f, t3 = 0f;
        if (path == KernelPath.Vector512)
        {
            const int w = 16;
            Vector512<float> a0 = default, b0 = default, a1 = default, b1 = default, a2 = default, b2 = default, a3 = default, b3 = default;
            for (; i + 2 * w <= k; i += 2 * w)
            {
                Sse.Prefetch0(ahead + i);
                Sse.Prefetch0(ahead + i + w);
                var y0 = Vector512.Load(y + i);
                var y1 = Vector512.Load(y + i + w);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x0 + i), y0, a0);
                b0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x0 + i + w), y1, b0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x1 + i), y0, a1);
                b1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x1 + i + w), y1, b1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(x2 + i), y0, a2);
                b2 = Avx512F.FusedMultiplyAdd(Vector512.Load(x2 + i + w), y1, b2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(x3 + i), y0, a3);
                b3 = Avx512F.FusedMultiplyAdd(Vector512.Load(x3 + i + w), y1, b3);
            }
            for (; i + w <= k; i += w)
            {
                var y0 = Vector512.Load(y + i);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x0 + i), y0, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x1 + i), y0, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(x2 + i), y0, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(x3 + i), y0, a3);
            }
            (t0, t1, t2, t3) = (Vector512.Sum(a0 + b0), Vector512.Sum(a1 + b1), Vector512.Sum(a2 + b2), Vector512.Sum(a3 + b3));
        }
        else if (path == KernelPath.Vector256)
        {
            const int w = 8;
            Vector256<float> a0 = default, b0 = default, a1 = default, b1 = default, a2 = default, b2 = default, a3 = default, b3 = default;
            for (; i + 2 * w <= k; i += 2 * w)
            {
                Sse.Prefetch0(ahead + i);
                var y0 = Vector256.Load(y + i);
                var y1 = Vector256.Load(y + i + w);
                a0 = Fma.MultiplyAdd(Vector256.Load(x0 + i), y0, a0);
                b0 = Fma.MultiplyAdd(Vector256.Load(x0 + i + w), y1, b0);
                a1 = Fma.MultiplyAdd(Vector256.Load(x1 + i), y0, a1);
                b1 = Fma.MultiplyAdd(Vector256.Load(x1 + i + w), y1, b1);
                a2 = Fma.MultiplyAdd(Vector256.Load(x2 + i), y0, a2);
                b2 = Fma.MultiplyAdd(Vector256.Load(x2 + i + w), y1, b2);
                a3 = Fma.MultiplyAdd(Vector256.Load(x3 + i), y0, a3);
                b3 = Fma.MultiplyAdd(Vector256.Load(x3 + i + w), y1, b3);
            }
            for (; i + w <= k; i += w)
            {
                var y0 = Vector256.Load(y + i);
                a0 = Fma.MultiplyAdd(Vector256.Load(x0 + i), y0, a0);
                a1 = Fma.MultiplyAdd(Vector256.Load(x1 + i), y0, a1);
                a2 = Fma.MultiplyAdd(Vector256.Load(x2 + i), y0, a2);
                a3 = Fma.MultiplyAdd(Vector256.Load(x3 + i), y0, a3);
            }
            (t0, t1, t2, t3) = (Vector256.Sum(a0 + b0), Vector256.Sum(a1 + b1), Vector256.Sum(a2 + b2), Vector256.Sum(a3 + b3));
        }
        for (; i < k; i++)
        {
            float yi = y[i];
            t0 += x0[i] * yi;
            t1 += x1[i] * yi;
            t2 += x2[i] * yi;
            t3 += x3[i] * yi;
        }
        (sums[0], sums[1], sums[2], sums[3]) = (t0, t1, t2, t3);
    }

    // The tile kernel's switches (a benchmark A/Bs them in one process): on, and from which depth for ≤ 8 rows.
    internal static bool SkinnyTiles = true;
    internal static int SkinnyTileMinK = 2048;

    /// <summary>
    /// dot(x row r, y row c) for the two rows x, x + stride and the three rows y, y + ldy, y + 2·ldy into sums[3r + c]:
    /// each vector load is shared by two or three multiply-adds, and each sum is formed exactly as <see cref="Dot"/>
    /// forms it. With <paramref name="prefetchNext"/> the next three rows of y (the next tile, y + 3·ldy on) are asked
    /// for meanwhile, a cache line of each per two-vector step (the first pair of rows over a tile only: the others
    /// find it in cache).
    /// </summary>
    private static void DotTile2x3(KernelPath path, float* x, long stride, float* y, long ldy, int k, float* sums, bool prefetchNext)
    {
        float* x0 = x, x1 = x + stride, y0 = y, y1 = y + ldy, y2 = y + 2 * ldy;
        int i = 0;
        float t00 = 0f, t01 = 0f, t02 = 0f, t10 = 0f, t11 = 0f, t12 = 0f;
        if (path == KernelPath.Vector512)
        {
            const int w = 16;
            Vector512<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default;
            Vector512<float> b00 = default, b01 = default, b02 = default, b10 = default, b11 = default, b12 = default;
            float* next = y + 3 * ldy;
            for (; i + 2 * w <= k; i += 2 * w)
            {
                if (prefetchNext)
                {
                    // Two lines of each row per step (32 floats).
                    Sse.Prefetch0(next + i); Sse.Prefetch0(next + i + w);
                    Sse.Prefetch0(next + ldy + i); Sse.Prefetch0(next + ldy + i + w);
                    Sse.Prefetch0(next + 2 * ldy + i); Sse.Prefetch0(next + 2 * ldy + i + w);
                }
                var w0 = Vector512.Load(y0 + i); var w1 = Vector512.Load(y1 + i); var w2 = Vector512.Load(y2 + i);
                var v = Vector512.Load(x0 + i);
                a00 = Avx512F.FusedMultiplyAdd(v, w0, a00); a01 = Avx512F.FusedMultiplyAdd(v, w1, a01); a02 = Avx512F.FusedMultiplyAdd(v, w2, a02);
                v = Vector512.Load(x1 + i);
                a10 = Avx512F.FusedMultiplyAdd(v, w0, a10); a11 = Avx512F.FusedMultiplyAdd(v, w1, a11); a12 = Avx512F.FusedMultiplyAdd(v, w2, a12);
                w0 = Vector512.Load(y0 + i + w); w1 = Vector512.Load(y1 + i + w); w2 = Vector512.Load(y2 + i + w);
                v = Vector512.Load(x0 + i + w);
                b00 = Avx512F.FusedMultiplyAdd(v, w0, b00); b01 = Avx512F.FusedMultiplyAdd(v, w1, b01); b02 = Avx512F.FusedMultiplyAdd(v, w2, b02);
                v = Vector512.Load(x1 + i + w);
                b10 = Avx512F.FusedMultiplyAdd(v, w0, b10); b11 = Avx512F.FusedMultiplyAdd(v, w1, b11); b12 = Avx512F.FusedMultiplyAdd(v, w2, b12);
            }
            for (; i + w <= k; i += w)
            {
                var w0 = Vector512.Load(y0 + i); var w1 = Vector512.Load(y1 + i); var w2 = Vector512.Load(y2 + i);
                var v = Vector512.Load(x0 + i);
                a00 = Avx512F.FusedMultiplyAdd(v, w0, a00); a01 = Avx512F.FusedMultiplyAdd(v, w1, a01); a02 = Avx512F.FusedMultiplyAdd(v, w2, a02);
                v = Vector512.Load(x1 + i);
                a10 = Avx512F.FusedMultiplyAdd(v, w0, a10); a11 = Avx512F.FusedMultiplyAdd(v, w1, a11); a12 = Avx512F.FusedMultiplyAdd(v, w2, a12);
            }
            (t00, t01, t02) = (Vector512.Sum(a00 + b00), Vector512.Sum(a01 + b01), Vector512.Sum(a02 + b02));
            (t10, t11, t12) = (Vector512.Sum(a10 + b10), Vector512.Sum(a11 + b11), Vector512.Sum(a12 + b12));
        }
        else if (path == KernelPath.Vector256)
        {
            const int w = 8;
            float* next = y + 3 * ldy;
            Vector256<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default;
            Vector256<float> b00 = default, b01 = default, b02 = default, b10 = default, b11 = default, b12 = default;
            for (; i + 2 * w <= k; i += 2 * w)
            {
                if (prefetchNext)
                {
                    Sse.Prefetch0(next + i);
                    Sse.Prefetch0(next + ldy + i);
                    Sse.Prefetch0(next + 2 * ldy + i);
                }
                var w0 = Vector256.Load(y0 + i); var w1 = Vector256.Load(y1 + i); var w2 = Vector256.Load(y2 + i);
                var v = Vector256.Load(x0 + i);
                a00 = Fma.MultiplyAdd(v, w0, a00); a01 = Fma.MultiplyAdd(v, w1, a01); a02 = Fma.MultiplyAdd(v, w2, a02);
                v = Vector256.Load(x1 + i);
                a10 = Fma.MultiplyAdd(v, w0, a10); a11 = Fma.MultiplyAdd(v, w1, a11); a12 = Fma.MultiplyAdd(v, w2, a12);
                w0 = Vector256.Load(y0 + i + w); w1 = Vector256.Load(y1 + i + w); w2 = Vector256.Load(y2 + i + w);
                v = Vector256.Load(x0 + i + w);
                b00 = Fma.MultiplyAdd(v, w0, b00); b01 = Fma.MultiplyAdd(v, w1, b01); b02 = Fma.MultiplyAdd(v, w2, b02);
                v = Vector256.Load(x1 + i + w);
                b10 = Fma.MultiplyAdd(v, w0, b10); b11 = Fma.MultiplyAdd(v, w1, b11); b12 = Fma.MultiplyAdd(v, w2, b12);
            }
            for (; i + w <= k; i += w)
            {
                var w0 = Vector256.Load(y0 + i); var w1 = Vector256.Load(y1 + i); var w2 = Vector256.Load(y2 + i);
                var v = Vector256.Load(x0 + i);
                a00 = Fma.MultiplyAdd(v, w0, a00); a01 = Fma.MultiplyAdd(v, w1, a01); a02 = Fma.MultiplyAdd(v, w2, a02);
                v = Vector256.Load(x1 + i);
                a10 = Fma.MultiplyAdd(v, w0, a10); a11 = Fma.MultiplyAdd(v, w1, a11); a12 = Fma.MultiplyAdd(v, w2, a12);
            }
            (t00, t01, t02) = (Vector256.Sum(a00 + b00), Vector256.Sum(a01 + b01), Vector256.Sum(a02 + b02));
            (t10, t11, t12) = (Vector256.Sum(a10 + b10), Vector256.Sum(a11 + b11), Vector256.Sum(a12 + b12));
        }
        for (; i < k; i++)
        {
            float u = x0[i], v = x1[i];
            t00 += u * y0[i]; t01 += u * y1[i]; t02 += u * y2[i];
            t10 += v * y0[i]; t11 += v * y1[i]; t12 += v * y2[i];
        }
        (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]) = (t00, t01, t02, t10, t11, t12);
    }

    private static void SkinnyRowTimesB(ref Job job, float* arow, float* crow, int j0, int j1)
    {
        int k = job.K;
        int j = j0;
        if (job.Path == KernelPath.Vector512)
        {
            for (; j + 64 <= j1; j += 64)
            {
                Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                float* bp = job.B + j;
                for (int p = 0; p < k; p++, bp += job.Ldb)
                {
                    var x = Vector512.Create(arow[p]);
                    s0 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(bp), s0);
                    s1 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(bp + 16), s1);
                    s2 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(bp + 32), s2);
                    s3 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(bp + 48), s3);
                }
                StoreVector512(crow + j, s0, job.Accumulate, job.Bias, j);
                StoreVector512(crow + j + 16, s1, job.Accumulate, job.Bias, j + 16);
                StoreVector512(crow + j + 32, s2, job.Accumulate, job.Bias, j + 32);
                StoreVector512(crow + j + 48, s3, job.Accumulate, job.Bias, j + 48);
            }
            for (; j + 16 <= j1; j += 16)
            {
                Vector512<float> s0 = default;
                float* bp = job.B + j;
                for (int p = 0; p < k; p++, bp += job.Ldb) s0 = Avx512F.FusedMultiplyAdd(Vector512.Create(arow[p]), Vector512.Load(bp), s0);
                StoreVector512(crow + j, s0, job.Accumulate, job.Bias, j);
            }
        }
        else if (job.Path == KernelPath.Vector256)
        {
            for (; j + 32 <= j1; j += 32)
            {
                Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
                float* bp = job.B + j;
                for (int p = 0; p < k; p++, bp += job.Ldb)
                {
                    var x = Vector256.Create(arow[p]);
                    s0 = Fma.MultiplyAdd(x, Vector256.Load(bp), s0);
                    s1 = Fma.MultiplyAdd(x, Vector256.Load(bp + 8), s1);
                    s2 = Fma.MultiplyAdd(x, Vector256.Load(bp + 16), s2);
                    s3 = Fma.MultiplyAdd(x, Vector256.Load(bp + 24), s3);
                }
                StoreVector256(crow + j, s0, job.Accumulate, job.Bias, j);
                StoreVector256(crow + j + 8, s1, job.Accumulate, job.Bias, j + 8);
                StoreVector256(crow + j + 16, s2, job.Accumulate, job.Bias, j + 16);
                StoreVector256(crow + j + 24, s3, job.Accumulate, job.Bias, j + 24);
            }
        }
        for (; j < j1; j++)
        {
            float sum = 0f;
            float* bp = job.B + j;
            for (int p = 0; p < k; p++, bp += job.Ldb) sum += arow[p] * *bp;
            Store(crow + j, sum, job.Accumulate, job.Bias, j);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreVector512(float* dst, Vector512<float> sum, bool accumulate, float* bias, int j)
    {
        if (bias != null) sum += Vector512.Load(bias + j);
        if (accumulate) sum += Vector512.Load(dst);
        Vector512.Store(sum, dst);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreVector256(float* dst, Vector256<float> sum, bool accumulate, float* bias, int j)
    {
        if (bias != null) sum += Vector256.Load(bias + j);
        if (accumulate) sum += Vector256.Load(dst);
        Vector256.Store(sum, dst);
    }

    // ---------------------------------------------------------------- per-thread scratch

    /// <summary>Packing buffers of the current thread, 64-byte aligned, grown on demand and then reused
    /// for the life of the thread (a handful of threads: the pool's and the callers').</summary>
    private static class Scratch
    {
        [ThreadStatic] private static nint t_packA;
        [ThreadStatic] private static long t_packACapacity;
        [ThreadStatic] private static nint t_packB;
        [ThreadStatic] private static long t_packBCapacity;

        public static float* PackA(long floats) => ThreadScratch.Grow(ref t_packA, ref t_packACapacity, floats);
        public static float* PackB(long floats) => ThreadScratch.Grow(ref t_packB, ref t_packBCapacity, floats);

        [ThreadStatic] private static nint t_dequantized;
        [ThreadStatic] private static long t_dequantizedCapacity;

        /// <summary>Rows of an int8 B sliver dequantized before they are packed (up to NR × KC floats, L1/L2-sized).</summary>
        public static float* Dequantized(long floats) => ThreadScratch.Grow(ref t_dequantized, ref t_dequantizedCapacity, floats);
    }

    /// <summary>The terms x[i]·y[i] of a dot product, fused into the accumulator on the vector paths.</summary>
    internal struct DotOp : IReduceOp
    {
        public float* X, Y;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly float Invoke(float accumulator, long i) => accumulator + X[i] * Y[i];
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector256<float> Invoke(Vector256<float> accumulator, long i) => Fma.MultiplyAdd(Vector256.Load(X + i), Vector256.Load(Y + i), accumulator);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector512<float> Invoke(Vector512<float> accumulator, long i) => Avx512F.FusedMultiplyAdd(Vector512.Load(X + i), Vector512.Load(Y + i), accumulator);
    }
}

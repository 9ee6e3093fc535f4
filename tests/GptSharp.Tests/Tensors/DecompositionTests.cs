using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Randomness;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// How the training step is cut up for many cores, at the book's shapes (124M, context 256, batch 2: 512 rows):
/// with 16 and 32 threads every kernel has at least one task per thread, and every output element belongs to
/// exactly one task. The planners are pure functions, so this runs on any machine; the GEMM, attention and the
/// pool itself also run with <see cref="Workers.Count"/> = 16 or 32 on however many cores there are, and must
/// give the same bits as one thread.
/// </summary>
[Collection(nameof(WorkersTests))]
public unsafe class DecompositionTests
{
    private const int Rows = 2 * 256, Channels = 768, Hidden = 3072, Vocab = 50257, Heads = 12, Seq = 256, Batch = 2;

    /// <summary>(m, n) of every GEMM of a step: forward x·Wᵀ, dx = dy·W, dW = dyᵀ·x, for qkv/out_proj, fc1, fc2 and the output head.</summary>
    private static readonly (string Name, int M, int N)[] StepGemms =
    [
        ("qkv/out_proj forward", Rows, Channels), ("fc1 forward", Rows, Hidden), ("fc2 forward", Rows, Channels), ("out_head forward", Rows, Vocab),
        ("qkv/out_proj dx", Rows, Channels), ("fc1 dx", Rows, Channels), ("fc2 dx", Rows, Hidden), ("out_head dx", Rows, Channels),
        ("qkv/out_proj dW", Channels, Channels), ("fc1 dW", Hidden, Channels), ("fc2 dW", Channels, Hidden), ("out_head dW", Vocab, Channels),
    ];

    [Theory]
    [InlineData(16, 8, 32)] // Vector512 micro-tile
    [InlineData(32, 8, 32)]
    [InlineData(16, 6, 16)] // Vector256 micro-tile (AVX2-only CPUs)
    [InlineData(32, 6, 16)]
    public void EveryGemmPanelGivesEveryThreadWorkAndEachElementToOneTask(int threads, int mr, int nr)
    {
        foreach (var (name, m, n) in StepGemms)
            for (int jc = 0; jc < n; jc += Gemm.NC)
            {
                int panel = Math.Min(Gemm.NC, n - jc);
                var plan = Gemm.PlanPanel(m, panel, threads, mr, nr);
                string where = $"{name} ({m}x{n}, panel at {jc}) on {threads} threads: {plan}";
                Assert.True(plan.Tasks >= threads, where);
                // Tiles are whole micro-tiles, so the per-element arithmetic does not depend on the partition.
                Assert.True(plan.RowBlock % mr == 0 && plan.ChunkColumns % nr == 0, where);
                Assert.True(plan.RowBlock <= Gemm.MC, where);
                // The tiles are the row blocks × the column chunks: each axis must be partitioned exactly once.
                AssertPartition(m, plan.RowBlock, plan.RowBlocks, where);
                AssertPartition(panel, plan.ChunkColumns, plan.ColumnChunks, where);
                // Tall tiles (each packed B sliver reused by 8 micro-tiles) unless the columns are already cut as finely as allowed.
                if (plan.RowBlock < Math.Min(m, Gemm.MinBlockRows))
                    Assert.True(plan.ChunkColumns <= Gemm.MinChunkSlivers * nr || plan.ColumnChunks * Gemm.MinChunkSlivers * nr > panel - nr, where);
                // Balance: no tile more than twice the average (the pool evens out the rest).
                double average = (double)m * panel / plan.Tasks;
                Assert.True((double)plan.RowBlock * plan.ChunkColumns <= 2 * average, where);
            }
    }

    [Fact]
    public void OnTwoThreadsTheGemmKeepsItsRowSplit()
    {
        // What 2 cores ran before column chunks existed: 4 row blocks of 128 rows over whole panels.
        var plan = Gemm.PlanPanel(Rows, Gemm.NC, 2, 8, 32);
        Assert.Equal(new Gemm.Partition(128, 4, Gemm.NC, 1), plan);
        Assert.Equal(1, Gemm.PlanPanel(Rows, Channels, 1, 8, 32).ColumnChunks);
    }

    private static void AssertPartition(int length, int block, int blocks, string where)
    {
        var hits = new int[length];
        for (int i = 0; i < blocks; i++)
        {
            int from = i * block, to = Math.Min(length, from + block);
            Assert.True(to > from, $"empty block {i}: {where}");
            for (int x = from; x < to; x++) hits[x]++;
        }
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    public void RowKernelsLossAndAdamWGiveEveryThreadWork(int threads)
    {
        long parameters = 0;
        foreach (var shape in GptModelParameterShapes()) parameters += shape;
        var kernels = new (string Name, int Count, long WorkPerItem)[]
        {
            ("embedding forward", Rows, Channels),
            ("embedding backward (column blocks)", Channels / Kernels.ColumnBlock, 2L * Rows * Kernels.ColumnBlock),
            ("layernorm forward", Rows, Channels * 4L),
            ("layernorm dx", Rows, Channels * 6L),
            ("layernorm dscale/dshift (column blocks)", Channels / Kernels.ColumnBlock, (long)Rows * Kernels.ColumnBlock * 3),
            ("bias gradient of 768 (column blocks)", Channels / Kernels.ColumnBlock, (long)Rows * Kernels.ColumnBlock),
            ("gelu", Simd.Chunks((long)Rows * Hidden), Simd.ElementChunk * 4),
            ("residual / dropout multiply", Simd.Chunks((long)Rows * Channels), Simd.ElementChunk),
            ("cross-entropy", Rows, Vocab * 4L),
            ("attention items", new Kernels.AttentionItems(Batch * Heads, Seq, 0).Count, new Kernels.AttentionItems(Batch * Heads, Seq, 0).WorkPerItem(Channels / Heads)),
            ("attention forward (head, block of query tiles)", new Kernels.QueryBlocks(Batch * Heads, Seq, 0).Count,
                new Kernels.QueryBlocks(Batch * Heads, Seq, 0).WorkPerItem(Channels / Heads)),
            ("attention backward (head, group of key tiles)", new Kernels.AttentionBackwardPlan(Batch * Heads, Seq).Count,
                new Kernels.AttentionBackwardPlan(Batch * Heads, Seq).WorkPerItem(Channels / Heads)),
            ("adamw (one loop over the parameter arena)", Simd.Chunks(parameters), Simd.ElementChunk * 4L),
            ("zero_grad (one clear of the gradient arena)", Simd.Chunks(parameters), Simd.ElementChunk),
        };
        foreach (var (name, count, work) in kernels)
        {
            int tasks = RowParallel.TaskCount(count, work, threads);
            Assert.True(tasks >= threads, $"{name}: {count} items make {tasks} tasks for {threads} threads");
            // Task t covers [count·t/tasks, count·(t+1)/tasks): with tasks ≤ count none is empty, and together they cover each item once.
            Assert.True(tasks <= count, name);
            var hits = new int[count];
            for (int t = 0; t < tasks; t++)
            {
                int from = (int)((long)count * t / tasks), to = (int)((long)count * (t + 1) / tasks);
                Assert.True(to > from, name);
                for (int i = from; i < to; i++) hits[i]++;
            }
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    private static IEnumerable<long> GptModelParameterShapes()
    {
        // GPT_CONFIG_124M: embeddings, 12 blocks, final norm, output head (163,009,536 parameters).
        yield return (long)Vocab * Channels;
        yield return (long)Seq * Channels;
        for (int l = 0; l < 12; l++)
        {
            yield return 4L * Channels * Channels + Channels;      // W_query, W_key, W_value (no bias), out_proj + bias
            yield return 2L * Channels * Hidden + Hidden + Channels; // ff.layers.0 and .2 with biases
            yield return 4L * Channels;                              // norm1, norm2
        }
        yield return 2L * Channels;
        yield return (long)Vocab * Channels;
    }

    [Fact]
    public void AttentionItemsCoverEveryHeadAndBlockOnceHeaviestFirst()
    {
        var items = new Kernels.AttentionItems(Batch * Heads, Seq, 0);
        Assert.Equal(Batch * Heads * 8, items.Count);
        var hits = new int[Batch * Heads, items.Blocks];
        for (int i = 0; i < items.Count; i++)
        {
            var (bh, rank) = items[i];
            hits[bh, rank]++;
            // Items come in rank order: the last query block (the most keys to see) of every head first.
            Assert.Equal(i / (Batch * Heads), rank);
        }
        Assert.All(hits.Cast<int>(), h => Assert.Equal(1, h));
        Assert.Equal(items.Blocks - 1, items.LastFirst(0));
    }

    [Theory]
    [InlineData(24, 256)]  // the book's batch 2: blocks of 2 tiles keep 96 items
    [InlineData(24, 1024)] // GPT-2's context: blocks of 4 tiles
    [InlineData(12, 300)]  // a prefill: a short last block
    [InlineData(1, 20)]    // one tile
    public void QueryBlocksCoverEveryQueryTileOnceHeadByHead(int batchHeads, int seq)
    {
        var blocks = new Kernels.QueryBlocks(batchHeads, seq, 0);
        Assert.True(blocks.Count >= Math.Min(Kernels.QueryBlocks.MinItems, batchHeads * blocks.Tiles) || blocks.TilesPerBlock == 1);
        var hits = new int[batchHeads, blocks.Tiles];
        for (int i = 0; i < blocks.Count; i++)
        {
            var (bh, block) = blocks[i];
            Assert.Equal(i / blocks.Blocks, bh); // a head's items in a row
            for (int t = block * blocks.TilesPerBlock; t < Math.Min(blocks.Tiles, (block + 1) * blocks.TilesPerBlock); t++) hits[bh, t]++;
        }
        Assert.All(hits.Cast<int>(), h => Assert.Equal(1, h));
        if (blocks.Blocks > 1) Assert.Equal(blocks.Blocks - 1, blocks[0].Block); // the heaviest block of a head first
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    public void ThePoolRunsThatManyThreadsAtOnce(int threads)
    {
        // Every task waits until all have started: it passes only if `threads` distinct threads run tasks together.
        int saved = Workers.Count;
        try
        {
            Workers.Count = threads;
            using var allStarted = new CountdownEvent(threads);
            var threadIds = new int[threads];
            bool[] timedOut = new bool[1];
            Workers.Run(threads, i =>
            {
                threadIds[i] = Environment.CurrentManagedThreadId;
                allStarted.Signal();
                if (!allStarted.Wait(TimeSpan.FromSeconds(30))) timedOut[0] = true;
            });
            Assert.False(timedOut[0]);
            Assert.Equal(threads, threadIds.Distinct().Count());
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [InlineData(false, true)]  // forward: x·Wᵀ
    [InlineData(false, false)] // dx = dy·W
    [InlineData(true, false)]  // dW += dyᵀ·x
    public void GemmOnSixteenThreadsWritesEachElementOnceAndMatchesOneThreadBitForBit(bool transA, bool transB)
    {
        // 512 rows, n across an NC panel edge; k small to keep the Debug build quick.
        const int m = Rows, n = Gemm.NC + 1105, k = 64;
        var random = new Random(5);
        float[] a = [.. Enumerable.Range(0, m * k).Select(_ => (float)(random.NextDouble() - 0.5))];
        float[] b = [.. Enumerable.Range(0, n * k).Select(_ => (float)(random.NextDouble() - 0.5))];
        int saved = Workers.Count;
        try
        {
            var results = new List<float[]>();
            foreach (int threads in new[] { 1, 16 })
            {
                Workers.Count = threads;
                var c = new float[m * n];
                fixed (float* pa = a, pb = b, pc = c)
                    Gemm.MatMul(transA, transB, m, n, k, pa, transA ? m : k, pb, transB ? k : n, pc, n);
                results.Add(c);
            }
            Assert.True(results[0].AsSpan().SequenceEqual(results[1]), "16 threads changed the bits");

            // Ones times ones, accumulated into zeros: an element written twice would hold 2k, one never written 0.
            Workers.Count = 16;
            Array.Fill(a, 1f);
            Array.Fill(b, 1f);
            var ones = new float[m * n];
            fixed (float* pa = a, pb = b, pc = ones)
                Gemm.MatMul(transA, transB, m, n, k, pa, transA ? m : k, pb, transB ? k : n, pc, n, accumulate: true);
            Assert.All(ones, x => Assert.Equal(k, x));
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [InlineData(24, 256)]  // the book's shapes: 3 groups of 8 key tiles' pairs
    [InlineData(24, 1024)] // GPT-2's context, batch 2
    [InlineData(96, 256)]  // batch 8: one group per head
    [InlineData(3, 300)]   // a short last tile, more groups than the heads alone would give
    [InlineData(2, 20)]    // one tile
    public void AttentionBackwardGroupsCoverEveryKeyTileOnceInOrder(int batchHeads, int seq)
    {
        var plan = new Kernels.AttentionBackwardPlan(batchHeads, seq);
        Assert.True(plan.Count >= Math.Min(Kernels.AttentionBackwardPlan.MinItems, batchHeads * plan.Pairs));
        var hits = new int[plan.Tiles];
        var tiles = new int[plan.Tiles];
        var costs = new List<long>();
        for (int g = 0; g < plan.Groups; g++)
        {
            int count = plan.KeyTiles(g, tiles);
            Assert.True(count > 0);
            // The group's first tile is tile g (its dQuery buffer starts there), and the tiles come in ascending order.
            Assert.Equal(g, tiles[0]);
            for (int k = 1; k < count; k++) Assert.True(tiles[k] > tiles[k - 1]);
            long cost = 0;
            for (int k = 0; k < count; k++) { hits[tiles[k]]++; cost += plan.Tiles - tiles[k]; }
            costs.Add(cost);
        }
        Assert.All(hits, h => Assert.Equal(1, h));
        // Pairs cost the same, so no group holds more than one pair above the others.
        Assert.True(costs.Max() - costs.Min() <= plan.Tiles + 1, string.Join(", ", costs));
        for (int item = 0; item < plan.Count; item++)
            Assert.Equal((item % batchHeads, item / batchHeads), plan[item]);
    }

    [Fact]
    public void FastRandomJumpsAheadAsFarAsItsDraws()
    {
        var generator = new FastRandom(42);
        foreach (long draws in new long[] { 0, 1, 2, 63, 64, 65, 1000, 4097 })
        {
            var drawn = new FastRandom(42);
            drawn.SetState(generator.GetState());
            for (long i = 0; i < draws; i++) drawn.NextUInt64();
            var ahead = new FastRandom(42);
            ahead.SetState(generator.GetState());
            ahead.Skip(draws);
            Assert.Equal(drawn.NextUInt64(), ahead.NextUInt64());
            generator.NextUInt64();
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(32)]
    public void FastDropoutBitsDrawnInPiecesHoldTheSerialStream(int threads)
    {
        // Enough rows for several tasks per thread; 100 columns end off a word.
        const int rows = 600, columns = 100;
        int words = Kernels.DropoutBitWords(columns);
        var serial = new FastRandom(9);
        var expected = new uint[rows * words];
        fixed (uint* e = expected)
            for (int r = 0; r < rows; r++) serial.BernoulliBits(e + r * words, columns, 0.9);
        int saved = Workers.Count;
        try
        {
            Workers.Count = threads;
            var pieces = new FastRandom(9);
            var bits = new uint[rows * words];
            fixed (uint* b = bits) Kernels.DropoutMaskBits(b, rows, columns, 0.1, pieces);
            Assert.Equal(expected, bits);
            Assert.Equal(serial.NextUInt64(), pieces.NextUInt64());
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [InlineData(1, 37 * 1024 + 100)]
    [InlineData(2, 37 * 1024 + 100)]
    [InlineData(32, 37 * 1024)]
    [InlineData(2, 1000)] // under one row: drawn in place
    public void FastResidualDropoutMaskHoldsTheSerialBernoulliDraws(int threads, int n)
    {
        // What DropoutMask did before it drew FastRandom masks as bits in pieces: bernoulli_ then div_, serially.
        var serial = new FastRandom(4);
        var expected = new float[n];
        serial.Bernoulli(expected, 0.9);
        float scale = 1f / (float)0.9;
        for (int i = 0; i < n; i++) expected[i] *= scale;
        int saved = Workers.Count;
        try
        {
            Workers.Count = threads;
            var pieces = new FastRandom(4);
            var mask = new float[n];
            fixed (float* m = mask) Kernels.DropoutMask(m, n, 0.1, pieces);
            Assert.Equal(expected, mask);
            Assert.Equal(serial.NextUInt64(), pieces.NextUInt64());
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AttentionOnThirtyTwoThreadsMatchesOneThreadBitForBit(bool dropout)
    {
        const int batch = 2, seq = 100, c = 32, heads = 4; // 4 query blocks of 32, the last one short
        int n = batch * seq * c;
        var random = new Random(11);
        Tensor Fill(int length, float scale = 1f)
        {
            var t = new Tensor(length);
            for (int i = 0; i < length; i++) t[i] = (float)(random.NextDouble() * 2 - 1) * scale;
            return t;
        }
        using Tensor q = Fill(n), k = Fill(n), v = Fill(n), dContext = Fill(n);
        int headRows = batch * heads * seq;
        var bits = new uint[headRows * Kernels.DropoutBitWords(seq)];
        fixed (uint* b = bits) Kernels.DropoutMaskBits(b, headRows, seq, 0.1, new FastRandom(5));
        float scale = Kernels.DropoutScale(0.1);
        int saved = Workers.Count;
        try
        {
            var outputs = new List<float[]>();
            foreach (int threads in new[] { 1, 32 })
            {
                Workers.Count = threads;
                using Tensor context = new(n), stats = new(2 * headRows), dots = new(headRows), dq = new(n), dk = new(n), dv = new(n);
                fixed (uint* bitData = bits)
                {
                    uint* mask = dropout ? bitData : null;
                    Kernels.AttentionForward(context.Data, stats.Data, mask, scale, q.Data, k.Data, v.Data, batch, seq, c, heads);
                    Kernels.AttentionBackward(dq.Data, dk.Data, dv.Data, dots.Data, dContext.Data, stats.Data, mask, scale,
                        q.Data, k.Data, v.Data, context.Data, batch, seq, c, heads);
                }
                outputs.Add([.. context.Span, .. stats.Span, .. dq.Span, .. dk.Span, .. dv.Span]);
            }
            Assert.True(outputs[0].AsSpan().SequenceEqual(outputs[1]), "32 threads changed the bits");
        }
        finally
        {
            Workers.Count = saved;
        }
    }
}

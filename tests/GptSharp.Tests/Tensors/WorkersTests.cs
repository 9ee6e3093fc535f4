using GptSharp.Tensors;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// Runs the Workers tests alone: they change <see cref="Workers.Count"/> and check that the pool itself runs
/// the tasks, which a concurrent test holding the pool (its Run would then execute inline) would defeat.
/// </summary>
[CollectionDefinition(nameof(WorkersTests), DisableParallelization = true)]
public class WorkersTestsCollection;

/// <summary>The thread pool: every task exactly once, exceptions reach the caller, nested runs work.</summary>
[Collection(nameof(WorkersTests))]
public class WorkersTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(2, 1000)]
    [InlineData(4, 3)]
    [InlineData(4, 10_000)]
    public void EveryTaskRunsExactlyOnce(int threads, int taskCount)
    {
        int saved = Workers.Count;
        try
        {
            Workers.Count = threads;
            for (int repeat = 0; repeat < 20; repeat++)
            {
                var counts = new int[taskCount];
                Workers.Run(taskCount, i => Interlocked.Increment(ref counts[i]));
                Assert.All(counts, c => Assert.Equal(1, c));
            }
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Fact]
    public void ManyQuickRunsInARowNeitherLoseTasksNorHang()
    {
        // Back-to-back tiny jobs stress the hand-over between jobs (join/close, sleeping and waking).
        int saved = Workers.Count;
        try
        {
            Workers.Count = 2;
            long total = 0;
            for (int run = 0; run < 20_000; run++) Workers.Run(1 + run % 4, i => Interlocked.Add(ref total, i + 1));
            long expected = 0;
            for (int run = 0; run < 20_000; run++) { int n = 1 + run % 4; expected += n * (n + 1) / 2; }
            Assert.Equal(expected, total);
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Fact]
    public void UsesMoreThanOneThread()
    {
        int saved = Workers.Count;
        try
        {
            Workers.Count = 2;
            var threadIds = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
            // Whichever thread takes task 0 holds it until another thread has taken a task (or 10 s pass on a
            // very busy machine), so the pool's thread must have joined for the test to pass.
            Workers.Run(4, i =>
            {
                threadIds.TryAdd(Environment.CurrentManagedThreadId, true);
                if (i != 0) return;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                while (threadIds.Count < 2 && clock.Elapsed.TotalSeconds < 10) Thread.Sleep(1);
            });
            Assert.True(threadIds.Count >= 2, $"Only {threadIds.Count} thread ran the tasks.");
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Fact]
    public void ExceptionsReachTheCallerAndThePoolStillWorks()
    {
        int saved = Workers.Count;
        try
        {
            Workers.Count = 2;
            var e = Assert.Throws<InvalidOperationException>(() => Workers.Run(100, i =>
            {
                if (i == 37) throw new InvalidOperationException("task 37 failed");
            }));
            Assert.Equal("task 37 failed", e.Message);

            int sum = 0;
            Workers.Run(100, i => Interlocked.Add(ref sum, i));
            Assert.Equal(4950, sum);
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Fact]
    public void NestedRunsExecuteInline()
    {
        int saved = Workers.Count;
        try
        {
            Workers.Count = 2;
            var counts = new int[8 * 16];
            Workers.Run(8, outer =>
            {
                Assert.True(Workers.IsInsideRun);
                Workers.Run(16, inner => Interlocked.Increment(ref counts[outer * 16 + inner]));
            });
            Assert.All(counts, c => Assert.Equal(1, c));
            Assert.False(Workers.IsInsideRun);
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Fact]
    public void ConcurrentCallersFromSeveralThreadsAllComplete()
    {
        int saved = Workers.Count;
        try
        {
            Workers.Count = 2;
            var totals = new long[4];
            var callers = Enumerable.Range(0, 4).Select(t => new Thread(() =>
            {
                for (int r = 0; r < 50; r++) Workers.Run(100, i => Interlocked.Add(ref totals[t], i));
            })).ToList();
            callers.ForEach(th => th.Start());
            callers.ForEach(th => th.Join());
            Assert.All(totals, total => Assert.Equal(50L * 4950, total));
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    private static readonly int[] Slots = new int[64];
    private static readonly Action<int> CachedTask = i => Slots[i & 63]++;

    [Fact]
    public unsafe void RunAndMatMulAllocateNothingAfterWarmUp()
    {
        int saved = Workers.Count;
        const int m = 64, n = 96, k = 200, wide = 2048;
        // a: [m, k] (also read as [k, m]); b: [wide, k] (also read as [k, n]); c: [m, wide].
        float* a = (float*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(m * k + wide * k + m * wide), sizeof(float));
        float* b = a + m * k, c = b + wide * k;
        try
        {
            Workers.Count = 2;
            void Step()
            {
                Workers.Run(8, CachedTask);
                Gemm.MatMul(false, true, m, n, k, a, k, b, k, c, n);                  // packed, parallel
                Gemm.MatMul(true, false, m, n, k, a, m, b, n, c, n, accumulate: true);
                Gemm.MatMul(false, true, 3, wide, k, a, k, b, k, c, wide);            // skinny, parallel
            }
            for (int i = 0; i < 5; i++) Step(); // warm-up: scratch buffers, JIT, pool threads
            // On the calling thread. (The whole process also measures 0 bytes in a console program; under xunit the
            // runner's own threads allocate meanwhile.)
            Allocations.AssertStepsAllocateNothing(Step, stepsPerWindow: 100);
        }
        finally
        {
            Workers.Count = saved;
            System.Runtime.InteropServices.NativeMemory.Free(a);
        }
    }

    [Fact]
    public void CountMustBePositive()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Workers.Count = 0);
    }
}

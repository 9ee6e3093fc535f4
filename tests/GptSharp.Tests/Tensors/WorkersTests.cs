using GptSharp.Tensors;

namespace GptSharp.Tests.Tensors;

/// <summary>The thread pool: every task exactly once, exceptions reach the caller, nested runs work.</summary>
[Collection(nameof(WorkersTests))] // changes Workers.Count: keep these tests from overlapping each other
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
            // Tasks long enough that the second thread certainly wakes up and takes some.
            Workers.Run(64, _ =>
            {
                threadIds.TryAdd(Environment.CurrentManagedThreadId, true);
                Thread.Sleep(2);
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

    [Fact]
    public void CountMustBePositive()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Workers.Count = 0);
    }
}

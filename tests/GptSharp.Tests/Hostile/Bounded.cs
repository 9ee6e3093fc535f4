namespace GptSharp.Tests.Hostile;

/// <summary>Runs a parse of hostile input with a time limit and measures what it allocated (on its own thread).</summary>
internal static class Bounded
{
    /// <summary>Runs <paramref name="action"/>; returns its exception (null on success), its managed allocation and time.</summary>
    public static (Exception? Error, long AllocatedBytes) Run(Action action, TimeSpan limit)
    {
        Exception? error = null;
        long allocated = 0;
        var thread = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try { action(); }
            catch (Exception e) { error = e; }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }, 16 << 20) { IsBackground = true };
        thread.Start();
        if (!thread.Join(limit)) throw new Xunit.Sdk.XunitException($"hostile input: still running after {limit.TotalSeconds:0.#} s (a hang?)");
        return (error, allocated);
    }

    /// <summary>Asserts that <paramref name="action"/> fails with <typeparamref name="T"/> within the time and allocation bounds.</summary>
    public static T Rejects<T>(Action action, long maxAllocatedBytes = 64L << 20, double seconds = 30) where T : Exception
    {
        var (error, allocated) = Run(action, TimeSpan.FromSeconds(seconds));
        Assert.True(allocated <= maxAllocatedBytes, $"allocated {allocated:N0} bytes (limit {maxAllocatedBytes:N0})");
        Assert.NotNull(error);
        return Assert.IsType<T>(error, exactMatch: false);
    }
}

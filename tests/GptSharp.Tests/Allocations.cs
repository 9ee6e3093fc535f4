namespace GptSharp.Tests;

/// <summary>The zero-allocation check of hot loops, measured on the calling thread (where a job, closure or buffer would be allocated).</summary>
internal static class Allocations
{
    /// <summary>
    /// Runs <paramref name="step"/> in up to three windows of <paramref name="stepsPerWindow"/> calls and asserts the last
    /// window allocated nothing. A one-time lazy (another test changing <c>Workers.Count</c> meanwhile, a tier-1 recompile's
    /// or a pool resize's bookkeeping: a few KB, seen in CI) lands in one window only; an allocation per step shows in every window.
    /// </summary>
    public static void AssertStepsAllocateNothing(Action step, int stepsPerWindow)
    {
        long allocated = 0;
        for (int window = 0; window < 3; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < stepsPerWindow; i++) step();
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated == 0) break;
        }
        Assert.Equal(0, allocated);
    }
}

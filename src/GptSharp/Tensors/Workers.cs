namespace GptSharp.Tensors;

/// <summary>
/// Runs a loop of independent tasks on all worker threads. Every kernel that splits work across
/// cores goes through here, so <see cref="Count"/> is the one knob for the thread count (<c>--threads</c>).
/// </summary>
/// <remarks>
/// Pass a cached delegate (a field, or a lambda that captures nothing) so that a call allocates nothing.
/// REFERENCE IMPLEMENTATION (Parallel.For); the engine issue replaces it with a persistent pool.
/// </remarks>
public static class Workers
{
    private static int _count = Environment.ProcessorCount;

    /// <summary>Number of threads kernels may use (default: all cores).</summary>
    public static int Count
    {
        get => _count;
        set
        {
            if (value < 1) throw new ArgumentOutOfRangeException(nameof(value), $"The thread count must be at least 1, got {value}.");
            _count = value;
        }
    }

    /// <summary>Calls <paramref name="task"/>(i) for i in [0, taskCount), spread over <see cref="Count"/> threads, and waits for all.</summary>
    public static void Run(int taskCount, Action<int> task)
    {
        if (taskCount <= 0) return;
        if (taskCount == 1 || _count == 1)
        {
            for (int i = 0; i < taskCount; i++) task(i);
            return;
        }
        Parallel.For(0, taskCount, new ParallelOptions { MaxDegreeOfParallelism = _count }, task);
    }
}

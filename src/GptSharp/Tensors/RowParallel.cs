namespace GptSharp.Tensors;

/// <summary>
/// A kernel body over a range of independent items (rows, columns, attention heads), as a struct
/// that holds the kernel's pointers and sizes: passing it by value to <see cref="RowParallel.For{TKernel}"/>
/// splits the work over <see cref="Workers"/> without allocating a closure.
/// </summary>
internal interface IRangeKernel
{
    /// <summary>Processes items [start, end).</summary>
    void Execute(int start, int end);
}

/// <summary>
/// Splits a range of independent items into a few contiguous chunks per worker thread. Small jobs run
/// inline on the caller: waking threads for a few microseconds of work costs more than it saves.
/// </summary>
internal static class RowParallel
{
    /// <summary>Jobs under this many element operations run on the calling thread.</summary>
    private const long MinParallelWork = 1 << 15;

    /// <param name="count">Number of items.</param>
    /// <param name="workPerItem">Rough element operations per item, to decide whether threads pay off.</param>
    public static void For<TKernel>(int count, long workPerItem, TKernel kernel) where TKernel : struct, IRangeKernel
    {
        if (count <= 0) return;
        int tasks = TaskCount(count, workPerItem, Workers.Count);
        // Decided by size only (with one worker the pool runs the tasks inline), so the per-thread job
        // objects are created during warm-up whatever the thread count is later.
        if (tasks <= 1)
        {
            kernel.Execute(0, count);
            return;
        }
        Job<TKernel>.Run(kernel, count, tasks);
    }

    /// <summary>
    /// Tasks a call of <see cref="For{TKernel}"/> over <paramref name="count"/> items is cut into on
    /// <paramref name="threads"/> threads (1: the caller does it all). Task t covers items
    /// [count·t/tasks, count·(t+1)/tasks): contiguous, disjoint, none empty.
    /// </summary>
    internal static int TaskCount(int count, long workPerItem, int threads)
    {
        if (count <= 0 || (long)count * workPerItem < MinParallelWork) return 1;
        // A few chunks per thread: the pool hands tasks out one at a time, so a core slowed by another
        // process takes fewer of them.
        return Math.Min(threads * TasksPerThread, count);
    }

    internal const int TasksPerThread = 4;

    /// <summary>One reusable job per calling thread and kernel type, so a call allocates nothing after the first.</summary>
    private sealed class Job<TKernel> where TKernel : struct, IRangeKernel
    {
        [ThreadStatic] private static Job<TKernel>? t_job;

        private TKernel _kernel;
        private int _count, _tasks;
        private readonly Action<int> _runTask;

        private Job() => _runTask = RunTask;

        public static void Run(TKernel kernel, int count, int tasks)
        {
            var job = t_job ??= new Job<TKernel>();
            job._kernel = kernel;
            job._count = count;
            job._tasks = tasks;
            Workers.Run(tasks, job._runTask);
        }

        private void RunTask(int task)
        {
            int start = (int)((long)_count * task / _tasks);
            int end = (int)((long)_count * (task + 1) / _tasks);
            TKernel kernel = _kernel;
            kernel.Execute(start, end);
        }
    }
}

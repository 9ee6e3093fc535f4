using System.Runtime.InteropServices;
using System.Runtime.ExceptionServices;

namespace GptSharp.Tensors;

/// <summary>
/// Runs a loop of independent tasks on all worker threads. Every kernel that splits work across
/// cores goes through here, so <see cref="Count"/> is the one knob for the thread count (<c>--threads</c>).
/// </summary>
/// <remarks>
/// A persistent pool: <see cref="Count"/> − 1 background threads plus the calling thread, which works too.
/// Tasks are handed out one index at a time from a shared counter, so a core slowed by another process
/// simply takes fewer tasks. Threads spin briefly between calls (kernels call <see cref="Run"/> back to back,
/// thousands of times per training step) and then block, so an idle pool costs no CPU.
/// A call allocates nothing when given a cached delegate (a field, or a lambda that captures nothing).
/// A <see cref="Run"/> from inside a task (or from a second thread while the pool is busy) runs inline on
/// the calling thread: the pool never waits on itself.
/// </remarks>
public static class Workers
{
    // How long an idle thread (and the caller waiting for stragglers) polls before blocking: long enough to
    // bridge the gap between two kernels of one training step (they follow each other within microseconds),
    // short enough not to steal a core from other processes when the pool is idle.
    private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs

    private static int _count = Environment.ProcessorCount;

    private static readonly object Gate = new();        // guards the sleeping threads' Monitor.Wait
    private static readonly object RunLock = new();     // one Run on the pool at a time
    private static readonly List<Thread> Threads = new();

    // The job being run: published before it is opened, read by workers after they join it.
    private static Action<int>? _task;
    private static int _taskCount;
    private static int _allowedWorkers;           // background threads allowed to join (Count − 1)
    private static volatile int _generation;      // bumped once per job, wakes the waiting threads
    private static int _sleepers;                 // threads blocked in Monitor.Wait on Gate
    private static Exception? _failure;           // first exception thrown by a task of this job
    private static int _callerSleeping;           // 1 while the caller is blocked waiting for the joined workers

    // Low bits: background threads that joined the current job and have not finished it.
    // Closed bit: set by the caller once it has run out of tasks; no thread joins after that.
    // So the caller never waits for a thread that did not start (descheduled by a busy machine): it does the
    // work itself and only waits for threads caught in the middle of a task.
    private const int Closed = 1 << 30;

    // The two fields every thread writes during a job (the task counter once per task, the join state once per
    // thread), each on a cache line of its own: no false sharing with each other or with the job fields that
    // the threads only read, which matters with 16+ threads taking tasks at once.
    [StructLayout(LayoutKind.Explicit, Size = 4 * CacheLine)]
    private struct Counters
    {
        [FieldOffset(CacheLine)] public int NextTask;         // next task index to hand out
        [FieldOffset(2 * CacheLine)] public int JoinState;
    }

    private const int CacheLine = 64;
    private static Counters s_counters = new() { JoinState = Closed };

    [ThreadStatic] private static bool t_insideRun;

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

    /// <summary>True on a pool thread, or on a thread currently inside <see cref="Run"/>: a nested call runs inline.</summary>
    public static bool IsInsideRun => t_insideRun;

    /// <summary>Calls <paramref name="task"/>(i) for i in [0, taskCount), spread over <see cref="Count"/> threads, and waits for all.</summary>
    /// <remarks>The first exception thrown by a task is rethrown here after every started task has finished;
    /// tasks not yet started when it was thrown are skipped.</remarks>
    public static void Run(int taskCount, Action<int> task)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (taskCount <= 0) return;
        int helpers = Math.Min(_count, taskCount) - 1;
        if (helpers <= 0 || t_insideRun || !Monitor.TryEnter(RunLock))
        {
            RunInline(taskCount, task);
            return;
        }
        try
        {
            t_insideRun = true;
            EnsureThreads(helpers);
            _task = task;
            _taskCount = taskCount;
            s_counters.NextTask = 0;
            _failure = null;
            _allowedWorkers = helpers;
            Interlocked.Exchange(ref s_counters.JoinState, 0);  // open (full fence: the job fields above are visible first)
            Interlocked.Increment(ref _generation);
            if (Volatile.Read(ref _sleepers) > 0)
            {
                lock (Gate) Monitor.PulseAll(Gate);
            }

            TakeTasks();
            Interlocked.Or(ref s_counters.JoinState, Closed);
            WaitForJoinedWorkers();

            _task = null;
            Exception? failure = _failure;
            _failure = null;
            if (failure != null) ExceptionDispatchInfo.Throw(failure);
        }
        finally
        {
            t_insideRun = false;
            Monitor.Exit(RunLock);
        }
    }

    private static void RunInline(int taskCount, Action<int> task)
    {
        bool wasInside = t_insideRun;
        t_insideRun = true;
        try
        {
            for (int i = 0; i < taskCount; i++) task(i);
        }
        finally
        {
            t_insideRun = wasInside;
        }
    }

    // Hands out task indices to the current thread until none are left or a task failed.
    private static void TakeTasks()
    {
        Action<int> task = _task!;
        int count = _taskCount;
        while (true)
        {
            int i = Interlocked.Increment(ref s_counters.NextTask) - 1;
            if (i >= count) return;
            try
            {
                task(i);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, e, null);
                Volatile.Write(ref s_counters.NextTask, count); // stop handing out the rest
                return;
            }
        }
    }

    private static void WaitForJoinedWorkers()
    {
        long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
        do
        {
            if (Volatile.Read(ref s_counters.JoinState) == Closed) return;
            Thread.SpinWait(4);
        } while (System.Diagnostics.Stopwatch.GetTimestamp() < deadline);
        lock (Gate)
        {
            // Interlocked (a full fence): the flag must be visible before the state is re-read, or the last
            // worker could miss it and the caller would sleep forever.
            Interlocked.Exchange(ref _callerSleeping, 1);
            while (Volatile.Read(ref s_counters.JoinState) != Closed) Monitor.Wait(Gate);
            Volatile.Write(ref _callerSleeping, 0);
        }
    }

    private static void EnsureThreads(int needed)
    {
        while (Threads.Count < needed)
        {
            int index = Threads.Count;
            var thread = new Thread(() => WorkerLoop(index))
            {
                IsBackground = true,
                Name = $"GptSharp worker {index + 1}",
            };
            Threads.Add(thread);
            thread.Start();
        }
    }

    private static void WorkerLoop(int index)
    {
        t_insideRun = true;
        int seen = _generation;
        while (true)
        {
            seen = WaitForJob(seen);
            if (index >= Volatile.Read(ref _allowedWorkers) || !TryJoin()) continue;
            TakeTasks();
            if (Interlocked.Decrement(ref s_counters.JoinState) == Closed && Volatile.Read(ref _callerSleeping) != 0)
            {
                lock (Gate) Monitor.PulseAll(Gate);
            }
        }
    }

    private static bool TryJoin()
    {
        while (true)
        {
            int state = Volatile.Read(ref s_counters.JoinState);
            if ((state & Closed) != 0) return false;
            if (Interlocked.CompareExchange(ref s_counters.JoinState, state + 1, state) == state) return true;
        }
    }

    // Returns the new generation once it differs from `seen`: spins first, then blocks.
    private static int WaitForJob(int seen)
    {
        long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
        do
        {
            int g = _generation;
            if (g != seen) return g;
            Thread.SpinWait(4);
        } while (System.Diagnostics.Stopwatch.GetTimestamp() < deadline);
        lock (Gate)
        {
            Interlocked.Increment(ref _sleepers);
            while (_generation == seen) Monitor.Wait(Gate);
            Interlocked.Decrement(ref _sleepers);
            return _generation;
        }
    }
}

namespace GptSharp.Cli;

/// <summary>
/// Runs a command body and turns every error into one line on stderr and exit code 1, instead of a stack trace:
/// errors a user can cause (bad options, missing or malformed files) as their message, anything else as an internal
/// error. <c>--verbose</c> adds the stack trace. Messages are printed with control characters escaped, since they
/// quote names and strings from files.
/// </summary>
internal static class CliErrors
{
    /// <summary>Set by <c>--verbose</c> (any command): print the exception with its stack trace after the error line.</summary>
    public static bool Verbose { get; set; }

    public static int Run(Func<int> body) => Run(body, null);

    /// <summary><see cref="Run(Func{int})"/> with the error line written to <paramref name="error"/> (stderr when null; tests pass a writer).</summary>
    public static int Run(Func<int> body, TextWriter? error)
    {
        try
        {
            return body();
        }
        catch (Exception e)
        {
            Report(e, error ?? Console.Error);
            return 1;
        }
    }

    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e)
        {
            Report(e, Console.Error);
            return 1;
        }
    }

    /// <summary>The one line for <paramref name="e"/> (without "error: ").</summary>
    internal static string Describe(Exception e) => e switch
    {
        // The library names its own properties (TrainingOptions.Epochs); the user typed flags (--epochs).
        _ when IsUserError(e) => Printable.Escape(CliFlags.Map(e.Message)),
        OutOfMemoryException or InsufficientExecutionStackException =>
            $"out of memory ({Printable.Escape(e.Message)}); the settings or the input need more memory than this machine has.",
        _ => $"internal error ({e.GetType().Name}): {Printable.Escape(e.Message)}" + (Verbose ? "" : " (run with --verbose for the stack trace)"),
    };

    private static void Report(Exception e, TextWriter error)
    {
        error.WriteLine($"error: {Describe(e)}");
        if (Verbose) error.WriteLine(Printable.Escape(e.ToString()).Replace("\\n", Environment.NewLine));
    }

    private static bool IsUserError(Exception e) =>
        e is ArgumentException or IOException or InvalidDataException or FormatException
            or UnauthorizedAccessException or NotSupportedException or InvalidOperationException
            or System.Text.Json.JsonException or OperationCanceledException or HttpRequestException;
}

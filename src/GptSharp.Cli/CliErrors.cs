namespace GptSharp.Cli;

/// <summary>
/// Runs a command body and turns the errors a user can cause (bad options, missing or malformed
/// files) into one line on stderr and exit code 1, instead of a stack trace.
/// </summary>
internal static class CliErrors
{
    public static int Run(Func<int> body) => Run(body, null);

    /// <summary><see cref="Run(Func{int})"/> with the error line written to <paramref name="error"/> (stderr when null; tests pass a writer).</summary>
    public static int Run(Func<int> body, TextWriter? error)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (IsUserError(e))
        {
            (error ?? Console.Error).WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static bool IsUserError(Exception e) =>
        e is ArgumentException or IOException or InvalidDataException or FormatException
            or UnauthorizedAccessException or NotSupportedException or InvalidOperationException
            or System.Text.Json.JsonException or OperationCanceledException or HttpRequestException;
}

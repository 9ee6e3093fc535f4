using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace GptSharp.Training;

/// <summary>
/// Serialization metadata for the run's JSON (the training options in <c>config.json</c>, the trainer state in a
/// checkpoint), generated at compile time: no reflection at run time, so a trimmed or NativeAOT build of the CLI
/// trains and resumes too. The call sites keep their own options (snake_case names, ...): the generated metadata
/// follows the options it is resolved through.
/// </summary>
[JsonSerializable(typeof(TrainingOptions))]
[JsonSerializable(typeof(TrainerState))]
[JsonSerializable(typeof(DataPosition))]
[JsonSerializable(typeof(Dictionary<string, double>))]
internal sealed partial class TrainingJsonContext : JsonSerializerContext
{
    /// <summary>The metadata of <typeparamref name="T"/> under <paramref name="options"/> (whose resolver is this context).</summary>
    internal static JsonTypeInfo<T> TypeInfo<T>(JsonSerializerOptions options) => (JsonTypeInfo<T>)options.GetTypeInfo(typeof(T));
}

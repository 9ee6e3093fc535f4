using System.Text.Json;

namespace GptSharp.Serving;

/// <summary>
/// Reads OpenAI's request bodies into <see cref="CompletionSettings"/>, naming the parameter of the first bad
/// value (OpenAI's <c>param</c>), so every bad request is a 400 with one clear line.
/// </summary>
internal static class OpenAiRequests
{
    /// <summary>Most choices one request may ask for.</summary>
    public const int MaxChoices = 16;

    public sealed record Parsed(int[] Prompt, CompletionSettings Settings, bool Stream, bool IncludeUsage);

    public static Parsed Completion(JsonElement body, string modelId, int contextLength, int vocabSize)
    {
        CheckObject(body);
        CheckText(body, "");
        CheckModel(body, modelId);
        CheckUnsupported(body);
        if (!body.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw Bad("prompt", "you must provide a prompt.");
        int[] ids = PromptIds(prompt, vocabSize);
        if (Bool(body, "echo") == true) throw Bad("echo", "echo is not supported.");
        if (body.TryGetProperty("suffix", out var suffix) && suffix.ValueKind != JsonValueKind.Null && !(suffix.ValueKind == JsonValueKind.String && suffix.GetString() == ""))
            throw Bad("suffix", $"suffix (insertion) is not supported, got {Shown(suffix)}.");
        if (body.TryGetProperty("best_of", out var bestOf) && bestOf.ValueKind != JsonValueKind.Null && !(bestOf.TryGetInt32(out int b) && b == 1))
            throw Bad("best_of", $"best_of (server-side best-of sampling) is not supported: only 1, got {Shown(bestOf)}; use n.");
        int? logprobs = Int(body, "logprobs", 0, 20);
        var settings = Common(body, contextLength, vocabSize, defaultMaxTokens: 16) with { TopLogprobs = logprobs ?? -1 };
        return Finish(body, ids, settings, contextLength);
    }

    public static Parsed Chat(JsonElement body, string modelId, int contextLength, int vocabSize)
    {
        CheckObject(body);
        CheckText(body, "");
        CheckModel(body, modelId);
        CheckUnsupported(body);
        if (!body.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw Bad("messages", "messages must be a non-empty array of {role, content} objects.");
        var turns = new List<(string, string)>();
        int index = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string param = $"messages[{index++}]";
            if (message.ValueKind != JsonValueKind.Object) throw Bad(param, $"{param} must be an object with role and content.");
            string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()!
                : throw Bad(param + ".role", $"{param}.role must be a string.");
            if (role is not ("system" or "developer" or "user" or "assistant"))
                throw Bad(param + ".role", $"{param}.role {Shown(r)} is not supported (use system, user or assistant).");
            turns.Add((role, Content(message, param + ".content")));
        }
        int[] ids = ChatTemplate.Encode(turns);
        bool logprobs = Bool(body, "logprobs") ?? false;
        int? top = Int(body, "top_logprobs", 0, 20);
        if (top is not null && !logprobs) throw Bad("top_logprobs", "top_logprobs needs logprobs set to true.");
        int defaultMax = Math.Max(1, contextLength - ids.Length + 1);
        var settings = Common(body, contextLength, vocabSize, defaultMax) with { TopLogprobs = logprobs ? top ?? 0 : -1 };
        if (Int(body, "max_completion_tokens", 1, int.MaxValue) is { } maxCompletion) settings = settings with { MaxTokens = maxCompletion };
        settings = settings with { Stop = ChatTemplate.WithChatStops(settings.Stop) };
        return Finish(body, ids, settings, contextLength);
    }

    private static Parsed Finish(JsonElement body, int[] ids, CompletionSettings settings, int contextLength)
    {
        if (ids.Length == 0) throw Bad("prompt", "the prompt is empty: give a text to continue.");
        if (ids.Length > contextLength)
            throw new ApiException(400, $"the prompt has {ids.Length} tokens, more than the model's context length ({contextLength}).", "prompt", "context_length_exceeded");
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = false;
        if (body.TryGetProperty("stream_options", out var options) && options.ValueKind != JsonValueKind.Null)
        {
            if (options.ValueKind != JsonValueKind.Object) throw Bad("stream_options", "stream_options must be an object.");
            includeUsage = Bool(options, "include_usage", "stream_options.include_usage") ?? false;
        }
        try { settings.ToGenerationOptions(); }
        catch (ArgumentException e) { throw Bad(null, e.Message.Replace("--", "")); }
        return new Parsed(ids, settings, stream, includeUsage);
    }

    private static CompletionSettings Common(JsonElement body, int contextLength, int vocabSize, int defaultMaxTokens)
    {
        int? topK = Int(body, "top_k", -1, int.MaxValue);
        return new CompletionSettings
        {
            MaxTokens = Int(body, "max_tokens", 1, int.MaxValue) ?? defaultMaxTokens,
            // A temperature too small for float32 division is sampled as its limit, greedy (Sampling.ApplyTemperature).
            Temperature = Float(body, "temperature", 0, 2) ?? 1f,
            TopP = Float(body, "top_p", 0, 1, exclusiveMin: true),
            // 0 or −1 = off (vLLM's convention); a k of the vocabulary or more keeps every token, so it is off too
            // (and a huge k never sizes memory).
            TopK = topK is null or <= 0 || topK >= vocabSize ? null : topK,
            LogitBias = LogitBias(body, vocabSize),
            MinP = Float(body, "min_p", 0, 1),
            PresencePenalty = Float(body, "presence_penalty", -2, 2) ?? 0f,
            FrequencyPenalty = Float(body, "frequency_penalty", -2, 2) ?? 0f,
            Seed = Seed(body),
            Stop = Stops(body),
            Choices = Int(body, "n", 1, MaxChoices) ?? 1,
        };
    }

    private static void CheckObject(JsonElement body)
    {
        if (body.ValueKind != JsonValueKind.Object) throw Bad(null, "the request body must be a JSON object.");
    }

    /// <summary>
    /// Every string and property name of the body must be valid Unicode: invalid UTF-8 bytes, UTF-8-encoded surrogates
    /// and escaped lone surrogates (<c>"\ud800"</c>) are the client's error, named by their place in the body.
    /// </summary>
    private static void CheckText(JsonElement element, string path)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                try { element.GetString(); }
                catch (InvalidOperationException) { throw Bad(path, $"{path} is not valid Unicode text (invalid UTF-8 or a lone surrogate)."); }
                break;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    string name;
                    try { name = property.Name; }
                    catch (InvalidOperationException) { throw Bad(path.Length == 0 ? null : path, $"a property name in {(path.Length == 0 ? "the body" : path)} is not valid Unicode text."); }
                    if (property.Value.ValueKind is JsonValueKind.String or JsonValueKind.Object or JsonValueKind.Array)
                        CheckText(property.Value, path.Length == 0 ? name : $"{path}.{name}");
                }
                break;
            case JsonValueKind.Array:
                int index = 0;
                foreach (var item in element.EnumerateArray())
                {
                    // Paths are built only for what can hold text: a long array of token ids costs nothing.
                    if (item.ValueKind is JsonValueKind.String or JsonValueKind.Object or JsonValueKind.Array) CheckText(item, $"{path}[{index}]");
                    index++;
                }
                break;
        }
    }

    /// <summary>
    /// Parameters OpenAI defines that this server does not implement are accepted only at their "off" value, and
    /// refused with a 400 naming them otherwise: a client never silently gets output it did not ask for.
    /// </summary>
    private static void CheckUnsupported(JsonElement body)
    {
        foreach (var property in body.EnumerateObject())
        {
            var value = property.Value;
            if (value.ValueKind == JsonValueKind.Null) continue;
            bool off = property.Name switch
            {
                "tools" or "functions" => value.ValueKind == JsonValueKind.Array && value.GetArrayLength() == 0,
                "tool_choice" or "function_call" => value.ValueKind == JsonValueKind.String && (value.ValueEquals("none") || value.ValueEquals("auto")),
                "response_format" => value.ValueKind == JsonValueKind.Object && value.TryGetProperty("type", out var type) && type.ValueEquals("text"),
                "modalities" => value.ValueKind == JsonValueKind.Array && value.EnumerateArray().All(m => m.ValueEquals("text")),
                "audio" or "prediction" or "reasoning_effort" or "web_search_options" => false,
                _ => true,
            };
            if (!off)
                throw Bad(property.Name, $"{property.Name} is not supported by this server (GPT-2 text only), got {Shown(value)}.");
        }
    }

    /// <summary>OpenAI's <c>logit_bias</c>: at most 300 token ids (as strings) of the vocabulary, each with a value in [−100, 100].</summary>
    private static IReadOnlyDictionary<int, float>? LogitBias(JsonElement body, int vocabSize)
    {
        if (!body.TryGetProperty("logit_bias", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Object)
            throw Bad("logit_bias", $"logit_bias must be an object mapping token ids to values in [-100, 100], got {Shown(value)}.");
        int count = value.EnumerateObject().Count();
        if (count > MaxLogitBias) throw Bad("logit_bias", $"logit_bias takes at most {MaxLogitBias} tokens, got {count}.");
        var bias = new Dictionary<int, float>(count);
        foreach (var entry in value.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= vocabSize)
                throw Bad("logit_bias", $"logit_bias key \"{Truncate(entry.Name)}\" is not a token id (0..{vocabSize - 1}).");
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetDouble(out double v) || !(v >= -100 && v <= 100))
                throw Bad("logit_bias", $"logit_bias[\"{id}\"] must be a number in [-100, 100], got {Shown(entry.Value)}.");
            bias[id] = (float)v;
        }
        return bias;
    }

    /// <summary>Most entries of <c>logit_bias</c> (OpenAI's limit).</summary>
    public const int MaxLogitBias = 300;

    /// <summary>A value as the client sent it, cut short: error messages name what was sent without echoing a megabyte.</summary>
    private static string Shown(JsonElement value) => Truncate(value.GetRawText());

    private static string Truncate(string text) => text.Length <= 64 ? text : text[..64] + "…";

    private static void CheckModel(JsonElement body, string modelId)
    {
        if (!body.TryGetProperty("model", out var model) || model.ValueKind == JsonValueKind.Null) return;
        if (model.ValueKind != JsonValueKind.String) throw Bad("model", "model must be a string.");
        if (model.GetString() != modelId)
            throw new ApiException(404, $"The model '{model.GetString()}' does not exist; this server serves '{modelId}'.", "model", "model_not_found");
    }

    private static int[] PromptIds(JsonElement prompt, int vocabSize)
    {
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return TextCompletion.Encode(prompt.GetString()!);
            case JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind is JsonValueKind.String or JsonValueKind.Array:
                return PromptIds(prompt[0], vocabSize);
            case JsonValueKind.Array when prompt.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number):
                return prompt.EnumerateArray().Select(e => e.TryGetInt32(out int id) && id >= 0 && id < vocabSize ? id
                    : throw Bad("prompt", $"prompt token {Shown(e)} is not a token id (0..{vocabSize - 1}).")).ToArray();
            case JsonValueKind.Array:
                throw Bad("prompt", "one prompt per request: a string, or an array of token ids.");
            default:
                throw Bad("prompt", "prompt must be a string or an array of token ids.");
        }
    }

    private static string Content(JsonElement message, string param)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        // The content-parts form: [{"type": "text", "text": "..."}].
        if (content.ValueKind == JsonValueKind.Array)
            return string.Concat(content.EnumerateArray().Select(part =>
                part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.ValueEquals("text")
                    && part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                    ? text.GetString()
                    : throw Bad(param, $"{param}: only text parts are supported.")));
        throw Bad(param, $"{param} must be a string or an array of text parts.");
    }

    private static IReadOnlyList<string> Stops(JsonElement body)
    {
        if (!body.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null) return [];
        string[] stops = stop.ValueKind switch
        {
            JsonValueKind.String => [stop.GetString()!],
            JsonValueKind.Array => stop.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()!
                : throw Bad("stop", "stop must be a string or an array of strings.")).ToArray(),
            _ => throw Bad("stop", "stop must be a string or an array of strings."),
        };
        if (stops.Length > 4) throw Bad("stop", $"stop takes at most 4 texts, got {stops.Length}.");
        if (stops.Any(string.IsNullOrEmpty)) throw Bad("stop", "stop texts must not be empty.");
        return stops;
    }

    private static ulong? Seed(JsonElement body)
    {
        if (!body.TryGetProperty("seed", out var seed) || seed.ValueKind == JsonValueKind.Null) return null;
        if (seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out long signed)) return unchecked((ulong)signed);
        if (seed.ValueKind == JsonValueKind.Number && seed.TryGetUInt64(out ulong unsigned)) return unsigned;
        throw Bad("seed", $"seed must be an integer, got {Shown(seed)}.");
    }

    private static int? Int(JsonElement body, string name, int min, int max)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int result))
            throw Bad(name, $"{name} must be an integer, got {Shown(value)}.");
        if (result < min || result > max)
            throw Bad(name, max == int.MaxValue ? $"{name} must be at least {min}, got {result}." : $"{name} must be in {min}..{max}, got {result}.");
        return result;
    }

    private static float? Float(JsonElement body, string name, float min, float max, bool exclusiveMin = false)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double result))
            throw Bad(name, $"{name} must be a number, got {Shown(value)}.");
        // The check is on the float32 the sampler will use: 1e-50 is 0 there, outside (0, 1].
        float single = (float)result;
        if (!(single >= min && single <= max) || (exclusiveMin && single == min))
            throw Bad(name, $"{name} must be in {(exclusiveMin ? "(" : "[")}{min}, {max}]{(exclusiveMin && single == min && result != min ? " (as a 32-bit float)" : "")}, got {Shown(value)}.");
        return single;
    }

    private static bool? Bool(JsonElement body, string name, string? param = null)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(param ?? name, $"{param ?? name} must be true or false, got {Shown(value)}."),
        };
    }

    private static ApiException Bad(string? param, string message) => new(400, message, param, param is null ? null : "invalid_value");
}
